"""The sandbox child: fence itself in, then run one whitelisted task on a JSON request.

`gradviz.check.sandbox.parent.run_sandboxed` starts this file by path as
``python -I -B -u -X faulthandler _sandbox_child.py <result fd>`` in a fresh temporary
directory. It reads one JSON request on stdin and, before any user code runs:

1. cuts the network with a new network namespace when the kernel allows it;
2. sets resource limits (CPU, address space, file size, processes, no core dumps);
3. on x86-64 Linux, installs a seccomp filter that makes the kernel refuse new processes,
   ``exec``, ``ptrace``, changing the limits and a list of admin system calls, so even
   ctypes cannot fork;
4. imports the task function (trusted code, before the audit hook);
5. installs an audit hook that stops the run on process creation, network use, writes
   outside the working directory and changes to the limits.

Results travel as newline-delimited JSON records on a pipe of their own (the fd in argv),
never on stdout, so what user code prints cannot pass for a result.

Only the standard library is imported at module level, and the file is run by path rather
than with ``-m``: a task that needs nothing (``exec``) never imports the gradviz package,
and so never pays for torch. See `gradviz.check.sandbox.parent` for what this does not protect against.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gc
import json
import linecache
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["USER_CODE_FILENAME", "exec_task", "run_user_code"]

# Tasks compile user source under this name; tracebacks are trimmed to frames from it.
USER_CODE_FILENAME = "<user code>"
RECURSION_LIMIT = 1000
# Freed when the user's code runs out of memory, so reporting it does not fail as well.
_CUSHION_BYTES = 4 * 2**20

_state: dict[str, Any] = {"result_fd": -1, "workdir": "", "limits": {}, "pid": 0}


# ---------------------------------------------------------------------------- tasks


def run_user_code(source: str, namespace: dict[str, Any]) -> None:
    """Compile `source` as ``<user code>`` and run it in `namespace`.

    Tasks use this so tracebacks show the user's own lines and nothing of gradviz.
    """
    linecache.cache[USER_CODE_FILENAME] = (
        len(source),
        None,
        source.splitlines(keepends=True),
        USER_CODE_FILENAME,
    )
    code = compile(source, USER_CODE_FILENAME, "exec")
    exec(code, namespace)


def exec_task(payload: dict[str, Any]) -> Any:
    """Run ``payload["code"]`` as a script; return what it assigned to ``result``.

    ``payload["inputs"]``, if given, is available to the code as the variable ``inputs``.
    """
    source = payload.get("code")
    if not isinstance(source, str):
        raise TypeError("payload['code'] must be a string of Python source")
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    if "inputs" in payload:
        namespace["inputs"] = payload["inputs"]
    run_user_code(source, namespace)
    return namespace.get("result")


# ------------------------------------------------------------------ result channel


def _send(record: dict[str, Any]) -> None:
    data = json.dumps(record, allow_nan=True).encode() + b"\n"
    view = memoryview(data)
    while view:
        try:
            written = os.write(_state["result_fd"], view)
        except InterruptedError:
            continue
        except OSError:
            return  # the parent is gone or stopped listening; nothing left to tell
        view = view[written:]


def _finish(kind: str, *, value: Any = None, error: str | None = None, tb: str = "") -> None:
    """Send the one result record and leave at once (no teardown of torch and friends)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a broken stream must not hide the result
            stream.flush()
    _send({"type": "result", "kind": kind, "value": value, "error": error, "traceback": tb})
    os._exit(0)


# ------------------------------------------------------------------------- fences


def _cut_network() -> bool:
    """Move into an empty network namespace (only a downed loopback). True if it worked.

    Must run while the process has one thread: unshare(CLONE_NEWUSER) refuses otherwise.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    if libc.unshare(clone_newnet) == 0:  # root, or CAP_SYS_ADMIN
        return True
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(clone_newuser | clone_newnet) != 0:  # no unprivileged user namespaces
        return False
    # Map our own ids into the new user namespace, or creating files would fail (EOVERFLOW).
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    except OSError:
        pass  # then file creation may fail, but the network is cut all the same
    return True


def _count_tasks_of(uid: int) -> int:
    """Threads of every process of `uid`: what RLIMIT_NPROC counts against."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                owner = threads = None
                for line in handle:
                    if line.startswith("Uid:"):
                        owner = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if owner == uid and threads:
            total += threads
    return total


def _apply_rlimits(limits: dict[str, Any]) -> None:
    import math
    import resource

    def cap(which: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # an unprivileged process cannot raise it
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))

    cpu = math.ceil(limits["cpu_seconds"])
    # SIGXCPU at the soft limit; SIGKILL a second later if SIGXCPU was somehow survived.
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
    cap(resource.RLIMIT_AS, int(limits["memory_mb"]) * 2**20)
    cap(resource.RLIMIT_FSIZE, int(limits["max_file_bytes"]))
    cap(resource.RLIMIT_CORE, 0)
    # RLIMIT_NPROC counts all threads of the real uid system-wide (root is exempt), so
    # allow max_processes more than the uid already runs rather than a fixed total.
    uid = os.getuid()
    existing = 0 if uid == 0 else _count_tasks_of(uid)
    cap(resource.RLIMIT_NPROC, existing + int(limits["max_processes"]))


# x86-64 system call numbers the filter refuses with EPERM: starting programs, reaching into
# other processes, and administration a root process could otherwise do (mount, modules,
# namespaces, device nodes, io_uring which bypasses seccomp for the calls it performs).
_DENIED_SYSCALLS = {
    "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
    "pidfd_send_signal": 424, "tkill": 200, "setrlimit": 160,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "reboot": 169,
    "swapon": 167, "swapoff": 168, "sethostname": 170, "setdomainname": 171, "iopl": 172,
    "ioperm": 173, "init_module": 175, "delete_module": 176, "finit_module": 313,
    "kexec_load": 246, "kexec_file_load": 320, "bpf": 321, "setns": 308, "unshare": 272,
    "acct": 163, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
    "clock_adjtime": 305, "add_key": 248, "request_key": 249, "keyctl": 250,
    "userfaultfd": 323, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "mknod": 133, "mknodat": 259, "quotactl": 179,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442,
}  # fmt: skip
_NR_CLONE, _NR_CLONE3, _NR_KILL, _NR_TGKILL, _NR_PRLIMIT64 = 56, 435, 62, 234, 302


def _seccomp_program(pid: int) -> list[tuple[int, int, int, int]]:
    """A classic-BPF seccomp filter as (code, jt, jf, k) rows; see seccomp(2).

    Classic BPF jumps only forward, so the shared endings (deny, enosys, allow) come last.
    """
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    arch_x86_64, clone_thread = 0xC000003E, 0x00010000
    nr, arch, arg0, arg2_low, arg2_high = 0, 4, 16, 32, 36

    # Rows are (code, true-label, false-label, k); labels resolve to relative jumps below.
    rows: list[tuple[Any, ...]] = [
        ("ld", None, None, arch),
        ("jeq", "next", "deny", arch_x86_64),  # i386 calls (int 0x80) would dodge the numbers
        ("ld", None, None, nr),
        ("jge", "deny", "next", 0x40000000),  # x32 ABI
        *[("jeq", "deny", "next", number) for number in sorted(_DENIED_SYSCALLS.values())],
        # glibc retries clone3 as clone on ENOSYS, where the flags can be read.
        ("jeq", "enosys", "next", _NR_CLONE3),
        ("jeq", "clone", "next", _NR_CLONE),
        ("jeq", "kill", "next", _NR_KILL),
        ("jeq", "tgkill", "next", _NR_TGKILL),
        ("jeq", "prlimit", "next", _NR_PRLIMIT64),
        ("ret", None, None, allow),
        ("label:clone",),  # threads yes, processes no
        ("ld", None, None, arg0),
        ("jset", "allow", "deny", clone_thread),
        ("label:kill",),  # signals to ourselves (pid, 0 = our group, -pid) only
        ("ld", None, None, arg0),
        ("jeq", "allow", "next", pid),
        ("jeq", "allow", "next", 0),
        ("jeq", "allow", "deny", (-pid) & 0xFFFFFFFF),
        ("label:tgkill",),
        ("ld", None, None, arg0),
        ("jeq", "allow", "deny", pid),
        ("label:prlimit",),  # reading limits (new_limit == NULL) is fine, setting is not
        ("ld", None, None, arg2_low),
        ("jeq", "next", "deny", 0),
        ("ld", None, None, arg2_high),
        ("jeq", "allow", "deny", 0),
        ("label:deny",),
        ("ret", None, None, eperm),
        ("label:enosys",),
        ("ret", None, None, enosys),
        ("label:allow",),
        ("ret", None, None, allow),
    ]
    labels: dict[str, int] = {}
    index = 0
    for row in rows:
        if row[0].startswith("label:"):
            labels[row[0][6:]] = index
        else:
            index += 1
    codes = {"ld": ld_abs, "jeq": jeq, "jge": jge, "jset": jset, "ret": ret}
    program = []
    for row in rows:
        if row[0].startswith("label:"):
            continue
        op, true_label, false_label, k = row
        here = len(program)

        def offset(label: str | None, here: int = here) -> int:
            if label is None or label == "next":
                return 0
            jump = labels[label] - here - 1
            if not 0 <= jump <= 255:
                raise ValueError(f"seccomp jump to {label} out of range: {jump}")
            return jump

        program.append((codes[op], offset(true_label), offset(false_label), k))
    return program


def _install_seccomp(pid: int) -> bool:
    """Load the filter; True if the kernel now enforces it for this process and its threads."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False

    class SockFilter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_ushort),
            ("jt", ctypes.c_ubyte),
            ("jf", ctypes.c_ubyte),
            ("k", ctypes.c_uint32),
        ]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    rows = _seccomp_program(pid)
    table = (SockFilter * len(rows))(*[SockFilter(*row) for row in rows])
    prog = SockFprog(len(rows), table)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    ulong = ctypes.c_ulong
    if libc.prctl(pr_set_no_new_privs, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        return False
    return (
        libc.prctl(
            pr_set_seccomp, ulong(seccomp_mode_filter), ctypes.byref(prog), ulong(0), ulong(0)
        )
        == 0
    )


# --------------------------------------------------------------------- audit hook

_PROCESS_EVENTS = frozenset(
    {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
     "subprocess.Popen", "pty.spawn", "os.startfile"}
)  # fmt: skip
_NETWORK_EVENTS = frozenset(
    {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
     "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}
)  # fmt: skip
# event -> ((index of a path argument, index of its dir_fd argument or None), ...)
_PATH_WRITE_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),  # a hard link to an outside file would let us write it
    "os.symlink": ((1, 2),),  # the target may point anywhere; opening it is checked
    "os.truncate": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),),
    "shutil.copyfile": ((1, None),),
    "shutil.copymode": ((1, None),),
    "shutil.copystat": ((1, None),),
    "shutil.copytree": ((1, None),),
    "shutil.move": ((0, None), (1, None)),
    "shutil.make_archive": ((0, None),),
    "shutil.unpack_archive": ((1, None),),
}
_SYSTEM_EVENTS = frozenset({"resource.setrlimit", "resource.prlimit", "socket.sethostname"})
_SIGNAL_EVENTS = frozenset({"os.kill", "os.killpg"})
_WATCHED = (
    _PROCESS_EVENTS
    | _NETWORK_EVENTS
    | _SYSTEM_EVENTS
    | _SIGNAL_EVENTS
    | frozenset(_PATH_WRITE_EVENTS)
    | {"open", "sqlite3.connect"}
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_ALLOWED_OUTSIDE = frozenset({"/dev/null"})


def _resolve(path: Any, dir_fd: Any = None) -> str | None:
    """The real absolute path an audited call would touch, or None if it cannot be told."""
    if isinstance(path, int):  # an fd that is already open
        try:
            return os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return None
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    # Audit events report a missing dir_fd as None or -1.
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(text):
        base = _resolve(dir_fd)
        if base is None:
            return None
    else:
        base = os.getcwd()
    return os.path.realpath(os.path.join(base, text))


def _outside(path: Any, dir_fd: Any = None) -> bool:
    if path is None:  # e.g. shutil.unpack_archive(extract_dir=None) means the cwd
        path = "."
    full = _resolve(path, dir_fd)
    if full is None:
        return True
    if full in _ALLOWED_OUTSIDE:
        return False
    workdir = _state["workdir"]
    return not (full == workdir or full.startswith(workdir + os.sep))


def _arg(args: tuple[Any, ...], index: int | None) -> Any:
    return args[index] if index is not None and index < len(args) else None


def _check(event: str, args: tuple[Any, ...]) -> tuple[str, str] | None:
    """(what was tried, detail) if the event must be refused, else None."""
    if event in _PROCESS_EVENTS:
        detail = event if not args else f"{event} {_brief(args[0])}"
        return "tried to start a process", detail
    if event in _NETWORK_EVENTS:
        # connect/bind/sendto/sendmsg carry (socket, address); the name lookups (host, ...).
        target = _arg(args, 0) if "get" in event else _arg(args, 1)
        return "tried to open a network connection", f"{event} {_brief(target)}"
    if event in _SYSTEM_EVENTS:
        if event == "resource.prlimit" and _arg(args, 2) is None:
            return None  # prlimit(pid, resource) only reads
        return "tried to change its limits or the system's settings", event
    if event in _SIGNAL_EVENTS:
        target = _arg(args, 0)
        if target in (_state["pid"], 0):
            return None
        return "tried to send a signal to another process", f"{event}{_brief(args)}"
    if event == "open":
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writes and not isinstance(path, int) and _outside(path):
            return "tried to write outside its working directory", f"open {_brief(path)}"
        return None
    if event == "sqlite3.connect":
        database = _arg(args, 0)
        if database in (":memory:", "") or not _outside(database):
            return None
        return "tried to write outside its working directory", f"sqlite3.connect {_brief(database)}"
    for path_index, fd_index in _PATH_WRITE_EVENTS.get(event, ()):
        path = _arg(args, path_index)
        if _outside(path, _arg(args, fd_index)):
            return "tried to write outside its working directory", f"{event} {_brief(path)}"
    return None


def _brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _user_line() -> int | None:
    """The line of user code running now (innermost), if any."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == USER_CODE_FILENAME:
            return frame.f_lineno
        frame = frame.f_back
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _WATCHED:
        return
    try:
        verdict = _check(event, args)
    except Exception as exc:  # fail closed: an event we cannot judge is refused
        verdict = ("did something the sandbox could not check", f"{event}: {exc!r}")
    if verdict is None:
        return
    what, detail = verdict
    line = _user_line()
    where = f" at line {line} of your code" if line is not None else ""
    # Stop here rather than raise: user code could catch the exception and carry on.
    _finish("refused", error=f"refused: {what} ({detail}{where})")


# ------------------------------------------------------------------ error reports


def describe(exc: BaseException) -> tuple[str, str]:
    """A one-line message and the traceback trimmed to user code."""
    only = "".join(traceback.format_exception_only(type(exc), exc))
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return f"{type(exc).__name__}: {exc.msg}{where}", only
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if f.filename == USER_CODE_FILENAME
    ]
    first_line = (str(exc).strip().splitlines() or [""])[0]
    message = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    if frames:
        message += f" (line {frames[-1].lineno})"
        # format_list folds recursion into "[Previous line repeated N more times]".
        trimmed = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
        return message, trimmed + only
    return message, only


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)  # torch: "DefaultCPUAllocator: can't allocate memory"
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "Cannot allocate memory" in text
    )


def _load_task(spec: str) -> Callable[[dict[str, Any]], Any]:
    import importlib

    module_name, _, function_name = spec.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name)
    if not callable(function):
        raise TypeError(f"{spec} is not a function")
    return function


def main(argv: list[str]) -> None:
    _state["result_fd"] = int(argv[1])
    _state["pid"] = os.getpid()
    _state["workdir"] = os.path.realpath(os.getcwd())
    request = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # input() sees end of file instead of the parent's pipe
    os.close(devnull)
    limits = _state["limits"] = request["limits"]
    # Run as a script, this module is __main__; alias it so "gradviz.check.sandbox.child:..."
    # tasks (and lab code importing run_user_code) share it instead of importing gradviz.
    sys.modules.setdefault("gradviz.check.sandbox.child", sys.modules[__name__])
    for path in reversed(request.get("sys_path", [])):
        if path not in sys.path:
            sys.path.insert(0, path)
    sys.dont_write_bytecode = True

    protections = []
    network_isolated = _cut_network()  # first: needs a single-threaded process
    if network_isolated:
        protections.append("network-namespace")
    _apply_rlimits(limits)
    protections.append("rlimits")
    if _install_seccomp(_state["pid"]):
        protections.append("seccomp")

    try:
        task = _load_task(request["task"])
    except BaseException as exc:
        message, tb = describe(exc)
        _finish("error", error=f"could not load task {request['task']}: {message}", tb=tb)
    sys.setrecursionlimit(RECURSION_LIMIT)
    sys.addaudithook(_audit)
    protections.append("audit-hook")
    _send({"type": "setup", "network_isolated": network_isolated, "protections": protections})

    cushion = bytearray(_CUSHION_BYTES)
    try:
        value = task(request["payload"])
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as exc:
            _finish("error", error=f"the result is not JSON data: {exc}")
        _finish("ok", value=value)
    except SystemExit as exc:
        code = exc.code if exc.code is not None else 0
        _finish("exit", error=f"called sys.exit({code!r}) before returning a result")
    except BaseException as exc:
        if _is_memory_error(exc):
            del cushion
            line = None
            frames = traceback.extract_tb(exc.__traceback__)
            for frame in frames:
                if frame.filename == USER_CODE_FILENAME:
                    line = frame.lineno
            traceback.clear_frames(exc.__traceback__)  # drops the user's big objects
            gc.collect()
            where = f" at line {line} of your code" if line is not None else ""
            _finish("memory", error=f"used more than {limits['memory_mb']} MB of memory{where}")
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            limit = limits["max_file_bytes"]
            _finish("output", error=f"wrote a file larger than {limit:,} bytes")
        message, tb = describe(exc)
        _finish("error", error=message, tb=tb)


if __name__ == "__main__":
    main(sys.argv)
