"""Kernel fences the sandbox child puts up around itself before any user code runs.

Loaded by `gradviz.check.sandbox.child` by file path (standard library only, no gradviz
package import). Each fence records into a ``protections`` dict: name -> {"applied": bool,
"reason": str}, so the app can say exactly what this machine could and could not apply.

The process tree (when the kernel allows a PID namespace)::

    outer (started by the parent; mirrors how the worker ended)
      └─ init, PID 1 of a new PID namespace (reaps; relays the worker's status)
           └─ worker, PID 2: private filesystem view, unprivileged uid, no_new_privs,
              Landlock, seccomp, limits, closed fds -> runs the task

The worker is not PID 1 because the kernel ignores default-action signals sent to a
namespace's init (SIGXCPU from RLIMIT_CPU, abort()'s SIGABRT), which would blur how a run
ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct
import sys
from typing import Any

__all__ = [
    "NOBODY",
    "PROTECTIONS",
    "apply_rlimits",
    "close_inherited_fds",
    "count_tasks_of",
    "drop_privileges",
    "enter_namespaces",
    "install_landlock",
    "private_view",
    "readable_paths",
    "set_no_new_privs",
    "split_into_namespace",
]

# Every protection the child tries, in the order it applies them.
PROTECTIONS = (
    "network-namespace",
    "pid-namespace",
    "mount-namespace",
    "rlimits",
    "unprivileged-user",
    "no-new-privs",
    "landlock",
    "seccomp",
    "closed-fds",
    "audit-hook",
)
NOBODY = 65534
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_NR_PIVOT_ROOT, _NR_CAPSET = 155, 126
_NR_LANDLOCK_CREATE, _NR_LANDLOCK_ADD, _NR_LANDLOCK_RESTRICT = 444, 445, 446
# Device files user code may open read-write; everything else outside is read-only or absent.
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
_READ_FILES = ("/etc/ld.so.cache",)  # the dynamic linker's index, for libraries torch loads
_SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib")

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _errno_text() -> str:
    code = ctypes.get_errno()
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"


def mark(protections: dict[str, Any], name: str, applied: bool, reason: str) -> bool:
    protections[name] = {"applied": bool(applied), "reason": reason}
    return bool(applied)


# ------------------------------------------------------------------- namespaces


def enter_namespaces(protections: dict[str, Any], skip: frozenset[str]) -> bool:
    """unshare() new network, PID, mount, IPC and UTS namespaces. True if PID+mount worked.

    Must run while the process has one thread (user namespaces refuse otherwise). As root
    no user namespace is needed; otherwise one maps our own uid so the rest is allowed.
    """
    want_net = "network-namespace" not in skip
    want_pid = "pid-namespace" not in skip and "mount-namespace" not in skip
    flags = (_CLONE_NEWNET if want_net else 0) | _CLONE_NEWIPC | _CLONE_NEWUTS
    if want_pid:
        flags |= _CLONE_NEWPID | _CLONE_NEWNS
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        flags |= _CLONE_NEWUSER
    if libc().unshare(flags) != 0 and want_pid:
        why = _errno_text()
        want_pid = False  # try the network alone, as an older kernel may allow that
        for name in ("pid-namespace", "mount-namespace"):
            mark(protections, name, False, f"unshare refused it ({why})")
        flags &= ~(_CLONE_NEWPID | _CLONE_NEWNS)
        if libc().unshare(flags) != 0:
            why = _errno_text()
            mark(protections, "network-namespace", False, f"unshare refused it ({why})")
            return False
    elif not want_pid and libc().unshare(flags) != 0:
        mark(protections, "network-namespace", False, f"unshare refused it ({_errno_text()})")
        return False
    if uid != 0:
        # Map ourselves to root inside, so the init may mount; the worker drops it again.
        with contextlib.suppress(OSError):
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                               ("gid_map", f"0 {gid} 1")):  # fmt: skip
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
    if want_net:
        mark(protections, "network-namespace", True, "own network namespace: no interfaces up")
    else:
        mark(protections, "network-namespace", False, "skipped on request")
    for name in ("pid-namespace", "mount-namespace"):
        if name in skip:
            mark(protections, name, False, "skipped on request")
        elif not want_pid and name not in protections:
            mark(protections, name, False, "skipped: the PID and mount namespaces go together")
    return want_pid


def split_into_namespace(protections: dict[str, Any]) -> None:
    """Fork the new PID namespace's init and, under it, the worker; return in the worker.

    The outer process and the init wait and pass on how the worker ended, then exit; only
    the worker returns from this call.
    """
    read_status, write_status = os.pipe()
    init = os.fork()
    if init:
        os.close(write_status)
        _outer_wait(init, read_status)  # never returns
    os.close(read_status)
    worker = os.fork()
    if worker:
        _init_wait(worker, write_status)  # never returns
    os.close(write_status)
    pid = os.getpid()
    mark(protections, "pid-namespace", pid == 2,
         f"own PID namespace: this process is PID {pid}, the app is not visible")  # fmt: skip


def _init_wait(worker: int, write_status: int) -> None:
    # PID 1: reap until the worker ends, then tell the outer process its wait status.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == worker:
            with contextlib.suppress(OSError):
                os.write(write_status, struct.pack("=i", status))
            os._exit(0)


def _outer_wait(init: int, read_status: int) -> None:
    _, own_status = os.waitpid(init, 0)
    data = b""
    with contextlib.suppress(OSError):
        data = os.read(read_status, 4)
    status = struct.unpack("=i", data)[0] if len(data) == 4 else own_status
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        import faulthandler

        faulthandler.disable()
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # end the same way, so the parent can tell why
        os._exit(128 + signum)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# --------------------------------------------------------------------- file view


def readable_paths(extra: list[str], hidden: list[str]) -> tuple[list[str], list[str]]:
    """(directories, files) user code may read: the Python and torch installation.

    The interpreter's prefixes, every directory on sys.path (site-packages, where torch
    lives), the directories of the libraries already mapped, the system library dirs and
    `extra` (the gradviz package). Nested entries are folded into their ancestors.
    `hidden` are sys.path entries not to expose whole (the checkout holding the package).
    """
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, *extra, *_SYSTEM_LIBS}
    dirs.update(p for p in sys.path if p and p not in hidden)
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) == 6 else ""
            if path.startswith("/"):
                dirs.add(os.path.dirname(path))
    real = sorted({os.path.realpath(d) for d in dirs if os.path.isdir(d)} - {"/"})
    folded: list[str] = []
    for path in real:
        if not any(path.startswith(kept + os.sep) for kept in folded):
            folded.append(path)
    files = [f for f in _READ_FILES if os.path.isfile(f)]
    return folded, files


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:  # fmt: skip
    enc = (lambda s: s.encode() if s is not None else None)  # noqa: E731
    if libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                    enc(data)) != 0:  # fmt: skip
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}: {_errno_text()}")


def _bind(source: str, target: str, *, read_only: bool, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        with open(target, "a"):
            pass
    _mount(source, target, None, _MS_BIND | _MS_REC)
    if read_only:
        _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID)


def private_view(root: str, workdir: str, dirs: list[str], files: list[str]) -> str:
    """pivot_root into a tmpfs holding only read-only binds of `dirs`/`files`, the devices,
    a fresh /proc of our PID namespace and `workdir` (read-write). Returns a description.

    Anything not listed (/etc, /home, /root, the project's checkout, other sessions'
    folders, the app's /proc entries) simply does not exist in the view.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount leaks to the host
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
    for path in dirs:
        _bind(path, root + path, read_only=True, is_dir=True)
    for path in files:
        _bind(path, root + path, read_only=True, is_dir=False)
    for path in DEVICES:
        if os.path.exists(path):
            _bind(path, root + path, read_only=False, is_dir=False)
    for link in ("/lib", "/lib64", "/bin", "/usr/lib64"):  # merged-/usr symlinks
        if os.path.islink(link) and not os.path.lexists(root + link):
            os.makedirs(os.path.dirname(root + link), exist_ok=True)
            os.symlink(os.readlink(link), root + link)
    cpu = "/sys/devices/system/cpu"  # torch's cpuinfo reads the CPU topology here
    if os.path.isdir(cpu):
        _bind(cpu, root + cpu, read_only=True, is_dir=True)
    _bind(workdir, root + workdir, read_only=False, is_dir=True)
    os.makedirs(root + "/proc", exist_ok=True)
    _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.chdir(root)
    if libc().syscall(ctypes.c_long(_NR_PIVOT_ROOT), b".", b".") != 0:
        raise OSError(ctypes.get_errno(), f"pivot_root: {_errno_text()}")
    if libc().umount2(b".", _MNT_DETACH) != 0:  # the old root, stacked under the new one
        raise OSError(ctypes.get_errno(), f"umount of the old root: {_errno_text()}")
    os.chdir("/")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    os.chdir(workdir)
    return (
        f"private filesystem: {len(dirs)} installation folders read-only, the working "
        "directory, /dev/null and friends, and a /proc of its own; nothing else exists"
    )


# ------------------------------------------------------------------- privileges


def drop_privileges(workdir: str) -> str:
    """Become uid/gid 65534 (nobody) when root; otherwise drop every capability."""
    if _is_host_root():
        os.chown(workdir, NOBODY, NOBODY)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        how = f"runs as uid/gid {NOBODY} (nobody) with no capabilities"
    else:
        # Root only inside our own user namespace: clear every capability set.
        header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, self
        data = bytes(24)
        if libc().syscall(ctypes.c_long(_NR_CAPSET), header, data) != 0:
            raise OSError(ctypes.get_errno(), f"capset: {_errno_text()}")
        how = f"uid {os.getuid()} inside a user namespace, with no capabilities"
    with open("/proc/self/status") as status:
        caps = next((line.split()[1] for line in status if line.startswith("CapEff:")), "")
    if caps.strip("0"):
        raise OSError(errno.EPERM, f"capabilities still effective: {caps}")
    return how


def _is_host_root() -> bool:
    # uid_map "0 0 4294967295" is the initial user namespace: real root.
    try:
        with open("/proc/self/uid_map") as handle:
            first = handle.read().split()
    except OSError:
        return os.getuid() == 0
    return os.getuid() == 0 and first[:2] == ["0", "0"]


def set_no_new_privs() -> str:
    pr_set_no_new_privs, ulong = 38, ctypes.c_ulong
    if libc().prctl(pr_set_no_new_privs, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), f"prctl(PR_SET_NO_NEW_PRIVS): {_errno_text()}")
    return "PR_SET_NO_NEW_PRIVS: nothing it runs can gain privileges (setuid files, caps)"


# -------------------------------------------------------------------- landlock

_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1, 2, 4, 8
_LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 14, 1 << 15


def _landlock_fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer: links and renames across folders (hard-link escapes)
    if abi >= 3:
        rights |= _LL_TRUNCATE
    if abi >= 5:
        rights |= _LL_IOCTL_DEV
    return rights


def install_landlock(workdir: str, dirs: list[str], files: list[str], own_proc: bool) -> str:
    """Landlock: read/execute `dirs`, `files` and /proc; read-write `workdir` and devices;
    no TCP bind or connect; no signals or abstract sockets outside (by ABI).

    Without a /proc of its own (`own_proc` False) only /proc/self is readable, so the
    app's /proc/<pid>/mem and environ stay shut even to a child that kept root.
    """
    sc = libc().syscall
    abi = sc(ctypes.c_long(_NR_LANDLOCK_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        raise OSError(ctypes.get_errno(), f"the kernel has no Landlock ({_errno_text()})")
    fs = _landlock_fs_rights(abi)
    net = 0b11 if abi >= 4 else 0  # bind_tcp | connect_tcp, with no rule allowing any
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets | signals
    attr = struct.pack("=QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = sc(ctypes.c_long(_NR_LANDLOCK_CREATE), attr, ctypes.c_size_t(len(attr)),
                 ctypes.c_uint32(0))  # fmt: skip
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {_errno_text()}")
    file_only = _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV
    read_dir = _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR
    proc = "/proc" if own_proc else f"/proc/{os.getpid()}"
    rules = [(d, read_dir) for d in (*dirs, proc, "/sys/devices/system/cpu")]
    rules += [(f, _LL_EXECUTE | _LL_READ_FILE) for f in files]
    rules += [(d, _LL_READ_FILE | _LL_WRITE_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV)
              for d in DEVICES]  # fmt: skip
    rules.append((workdir, fs))
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this machine; nothing to allow
            try:
                allowed = rights & fs & (fs if os.path.isdir(path) else file_only)
                rule = struct.pack("=Qi", allowed, fd)
                if sc(ctypes.c_long(_NR_LANDLOCK_ADD), ctypes.c_int(ruleset), ctypes.c_int(1),
                      rule, ctypes.c_uint32(0)) != 0:  # fmt: skip
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}: {_errno_text()}")
            finally:
                os.close(fd)
        if sc(ctypes.c_long(_NR_LANDLOCK_RESTRICT), ctypes.c_int(ruleset), ctypes.c_uint32(0)):
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {_errno_text()}")
    finally:
        os.close(ruleset)
    extras = ", no TCP" if net else ""
    extras += ", no signals or abstract sockets outside" if scoped else ""
    return f"Landlock ABI {abi}: reads only the installation, writes only its folder{extras}"


# ---------------------------------------------------------------- limits and fds


def count_tasks_of(uid: int) -> int:
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


def apply_rlimits(limits: dict[str, Any], existing_tasks: int) -> str:
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
    cap(resource.RLIMIT_NOFILE, int(limits.get("max_open_files", 256)))
    # RLIMIT_NPROC counts all threads of the real uid system-wide, so allow max_processes
    # more than the uid already runs rather than a fixed total.
    cap(resource.RLIMIT_NPROC, existing_tasks + int(limits["max_processes"]))
    return (
        f"CPU {cpu} s, address space {limits['memory_mb']} MB, files "
        f"{limits['max_file_bytes']:,} bytes, {limits.get('max_open_files', 256)} open files"
    )


def close_inherited_fds(keep: set[int]) -> str:
    """Close every descriptor but `keep`; what the app left open is not the user's."""
    fds = sorted(int(name) for name in os.listdir("/proc/self/fd") if name.isdigit())
    closed = 0
    for fd in fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
                closed += 1
    return f"kept only fds {sorted(keep)} (stdin from /dev/null, output pipes); closed {closed}"
