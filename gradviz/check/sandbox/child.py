"""The sandbox child: fence itself in, then run one whitelisted task on a JSON request.

`gradviz.check.sandbox.parent.run_sandboxed` starts this file by path as
``python -I -B -u -X faulthandler child.py <result fd> <empty root dir>`` in a fresh
temporary directory. It reads one JSON request on stdin and, before any user code runs,
puts up the fences of `gradviz.check.sandbox.fences` (namespaces, a private filesystem
view, uid nobody, no_new_privs, Landlock, limits, closed fds) and the seccomp filter of
`gradviz.check.sandbox.seccomp`; then it imports the task function (trusted code) and
installs an audit hook that stops the run on process creation, network use, writes
outside the working directory and changes to the limits, and refuses reads outside the
installation. What was applied travels to the parent in a "setup" record.

Results travel as newline-delimited JSON records on a pipe of their own (the fd in argv),
never on stdout, so what user code prints cannot pass for a result.

Only the standard library is imported at module level, and the file is run by path rather
than with ``-m``: a task that needs nothing (``exec``) never imports the gradviz package,
and so never pays for torch. See `gradviz.check.sandbox.parent` for what is not covered.
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
from types import FrameType
from typing import Any

__all__ = ["ISOLATION_ENV_VAR", "USER_CODE_FILENAME", "exec_task", "run_user_code"]

# Tasks compile user source under this name; tracebacks are trimmed to frames from it.
USER_CODE_FILENAME = "<user code>"
# Set to 1 in the app's environment: run user code only when every protection is applied.
ISOLATION_ENV_VAR = "GRADVIZ_REQUIRE_ISOLATION"
RECURSION_LIMIT = 1000
# Freed when the user's code runs out of memory, so reporting it does not fail as well.
_CUSHION_BYTES = 4 * 2**20

_state: dict[str, Any] = {"result_fd": -1, "workdir": "", "limits": {}, "pid": 0, "readable": ()}


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
    | {"open", "sqlite3.connect", "os.listdir", "os.scandir"}
)
_READ_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
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


def _unreadable(path: Any) -> bool:
    """True if `path` lies outside the installation, the devices, /proc and the workdir."""
    if isinstance(path, int):
        return False  # an fd already open: reading it was checked when it was opened
    full = _resolve("." if path is None else path)
    if full is None:
        return True
    if not _outside(full):
        return False
    return not any(full == root or full.startswith(root + os.sep) for root in _state["readable"])


def _refuse_read(event: str, args: tuple[Any, ...]) -> None:
    """Raise PermissionError for a read outside: a library probing a file then carries on."""
    path = _arg(args, 0)
    if event == "open":
        mode, flags = (list(args) + [None, None, None])[1:3]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        ):
            return  # a write: _check judges it
    if _unreadable(path):
        raise PermissionError(
            errno.EACCES,
            f"refused by the sandbox: {event} outside the Python installation and the working "
            "directory",
            os.fsdecode(path) if isinstance(path, str | bytes) else repr(path),
        )


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
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == USER_CODE_FILENAME:
            return frame.f_lineno
        frame = frame.f_back
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _WATCHED:
        return
    if event in _READ_EVENTS and _state["readable"]:
        _refuse_read(event, args)
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


def _load_sibling(name: str) -> Any:
    """Import fences.py / seccomp.py beside this file by path (no gradviz package import)."""
    import importlib.util

    full = f"gradviz.check.sandbox.{name}"
    if full in sys.modules:
        return sys.modules[full]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(full, path)
    if spec is None or spec.loader is None:  # a .py path always has a spec and a loader
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def _world_traversable(path: str) -> bool:
    """True if uid nobody could reach `path` (every ancestor searchable by others)."""
    while path not in ("/", ""):
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        path = os.path.dirname(path)
    return True


def _fence(request: dict[str, Any]) -> dict[str, Any]:
    """Put up every protection; returns (in the worker process only) what was applied."""
    fences = _load_sibling("fences")
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the outer and init processes too
    skip = frozenset(request.get("skip_protections", ()))
    workdir = os.path.realpath(os.getcwd())
    protections: dict[str, Any] = {}
    dirs, files = fences.readable_paths(request.get("readable", []), request.get("sys_path", []))
    if fences.enter_namespaces(protections, skip):  # first: needs a single thread
        try:
            fences.split_into_namespace(protections)  # returns in the worker only
        except OSError as exc:
            fences.mark(protections, "pid-namespace", False, f"fork failed: {exc}")
    protections.setdefault("pid-namespace", {"applied": False, "reason": "not available"})
    root = os.getuid() == 0
    tasks = fences.count_tasks_of(fences.NOBODY if root else os.getuid())

    def step(name: str, action: Callable[[], str], unless: str | None = None) -> None:
        if name in skip:
            fences.mark(protections, name, False, "skipped on request")
        elif unless is not None:
            fences.mark(protections, name, False, unless)
        else:
            try:
                fences.mark(protections, name, True, action())
            except Exception as exc:  # noqa: BLE001 - a fence that fails is reported, not fatal
                fences.mark(protections, name, False, f"{type(exc).__name__}: {exc}")

    no_pid = None if protections["pid-namespace"]["applied"] else "needs the PID namespace"
    step("mount-namespace",
         lambda: fences.private_view(_state["root"], workdir, dirs, files), no_pid)  # fmt: skip
    step("rlimits", lambda: fences.apply_rlimits(request["limits"], tasks))
    unreachable = not protections["mount-namespace"]["applied"] and not all(
        _world_traversable(d) for d in dirs
    )
    step("unprivileged-user", lambda: fences.drop_privileges(workdir),
         "uid nobody could not read the Python installation without the private view"
         if root and unreachable else None)  # fmt: skip
    step("no-new-privs", fences.set_no_new_privs)
    own_proc = protections["mount-namespace"]["applied"]
    step("landlock", lambda: fences.install_landlock(workdir, dirs, files, own_proc))
    step("seccomp", lambda: _load_sibling("seccomp").install_seccomp(os.getpid()))
    keep = {0, 1, 2, _state["result_fd"]}
    step("closed-fds", lambda: fences.close_inherited_fds(keep))
    _state["readable"] = (*dirs, *files, *fences.DEVICES, "/proc", "/sys/devices/system/cpu")
    return protections


def _refuse_without_isolation(setup: dict[str, Any]) -> None:
    protections = setup["protections"]
    missing = [f"{name} ({p['reason']})" for name, p in protections.items() if not p["applied"]]
    if missing:
        _send(setup)
        _finish("refused", error=(
            f"refused to run your code: {ISOLATION_ENV_VAR}=1 and this machine could not "
            f"apply: {'; '.join(missing)}. Run on a kernel that allows them, or unset "
            f"{ISOLATION_ENV_VAR}"))  # fmt: skip


def _threads_left() -> list[str]:
    import threading

    main_thread = threading.main_thread()
    return [t.name for t in threading.enumerate()
            if t is not main_thread and t.is_alive() and not t.daemon]  # fmt: skip


def _run_task(task: Callable[[dict[str, Any]], Any], payload: dict[str, Any]) -> None:
    limits = _state["limits"]
    cushion = bytearray(_CUSHION_BYTES)
    try:
        value = task(payload)
        running = _threads_left()
        if running:
            count = f"{len(running)} thread{'s' if len(running) > 1 else ''}"
            names = ", ".join(running)[:120]
            _finish("error", error=(
                f"left {count} running when the code finished ({names}): join every "
                "thread you start (thread.join()); the sandbox stopped them"))  # fmt: skip
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


def main(argv: list[str]) -> None:
    _state["result_fd"] = int(argv[1])
    _state["root"] = argv[2] if len(argv) > 2 else ""
    # Line one says how to fence and what task to load; line two, the payload, may come
    # much later: a spare child waits for it fenced in, with the task already imported.
    request = json.loads(sys.stdin.buffer.readline())
    _state["limits"] = request["limits"]
    # Run as a script, this module is __main__; alias it so "gradviz.check.sandbox.child:..."
    # tasks (and lab code importing run_user_code) share it instead of importing gradviz.
    sys.modules.setdefault("gradviz.check.sandbox.child", sys.modules[__name__])
    for path in reversed(request.get("sys_path", [])):
        if path not in sys.path:
            sys.path.insert(0, path)
    sys.dont_write_bytecode = True

    protections = _fence(request)
    _state["pid"] = os.getpid()  # the worker's, as its own PID namespace numbers it
    _state["workdir"] = os.path.realpath(os.getcwd())
    setup = {"type": "setup", "protections": protections,
             "network_isolated": protections["network-namespace"]["applied"]}  # fmt: skip
    if request.get("require_isolation"):
        _refuse_without_isolation(setup)
    try:
        task = _load_task(request["task"])
    except BaseException as exc:
        message, tb = describe(exc)
        _finish("error", error=f"could not load task {request['task']}: {message}", tb=tb)
    if request.get("warm"):
        _warm_up(task)
    payload = json.loads(sys.stdin.buffer.readline() or b"null")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # input() sees end of file instead of the parent's pipe
    os.close(devnull)
    sys.setrecursionlimit(RECURSION_LIMIT)
    sys.addaudithook(_audit)
    protections["audit-hook"] = {"applied": True, "reason": "stops process starts, network "
                                 "use, reads and writes outside (Python-level calls)"}  # fmt: skip
    _send(setup)
    _run_task(task, payload)


def _warm_up(task: Callable[[dict[str, Any]], Any]) -> None:
    """A spare runs the task's own trusted warm-up (first-call costs of torch and Hypothesis)
    before any user code, so the user's run starts warm. Failures only mean a colder run."""
    warm = getattr(sys.modules.get(getattr(task, "__module__", ""), None), "warm_up", None)
    if callable(warm):
        # Our own warm-up: if it fails the run is only colder; the real run reports errors.
        with contextlib.suppress(Exception):
            warm()


if __name__ == "__main__":
    main(sys.argv)
