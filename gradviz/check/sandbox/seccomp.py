"""The sandbox worker's seccomp filter: the kernel refuses new processes, ptrace and admin calls.

Loaded by file path from `gradviz.check.sandbox.child` (standard library only). Works on
x86-64 Linux; elsewhere `install_seccomp` raises and the protection is reported missing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any

__all__ = ["install_seccomp"]

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
    "fspick": 433, "mount_setattr": 442, "setsid": 112, "setpgid": 109, "kcmp": 312,
    "process_madvise": 440, "pidfd_open": 434,
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
    program: list[tuple[int, int, int, int]] = []
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


def install_seccomp(pid: int) -> str:
    """Load the filter; the kernel then enforces it for this process and its threads."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        where = f"{sys.platform} {os.uname().machine}"
        raise OSError(errno.ENOSYS, f"the filter is written for x86-64 Linux, not {where}")

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
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_no_new_privs, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    mode = ulong(seccomp_mode_filter)
    if libc.prctl(pr_set_seccomp, mode, ctypes.byref(prog), ulong(0), ulong(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_SECCOMP) failed: {os.strerror(code)}")
    return (
        f"seccomp: {len(_DENIED_SYSCALLS)} system calls refused (new processes, ptrace, "
        "process_vm_readv/writev, mounts, namespaces...), signals only to itself"
    )
