"""Run code a user typed in a separate, fenced-in Python process: `run_sandboxed`.

Rule of the project: user-supplied code never runs in the app's process. Each call starts
a fresh ``python -I`` child (same interpreter) in a new temporary directory, with a scrubbed
environment, in its own session so the whole process group can be killed. Before user code
runs, the child (`gradviz.check.sandbox.child`) moves into new PID, mount, network, IPC and
UTS namespaces, pivots into a private filesystem holding only the Python/torch installation
(read-only), the gradviz package (read-only), a few devices, its own /proc and its working
directory; drops to uid nobody (or all capabilities inside a user namespace); sets
no_new_privs; restricts itself with Landlock (reads as above, writes to its directory, no
TCP, no signals outside); sets resource limits; loads a seccomp filter (no new processes,
ptrace, process_vm_readv/writev, mounts, namespaces); closes inherited descriptors; and
installs an audit hook that names what Python-level code tried. Each fence is reported in
`SandboxResult.protections`; with ``GRADVIZ_REQUIRE_ISOLATION=1`` the child refuses to run
user code unless every one is applied. At most ``GRADVIZ_MAX_SANDBOXES`` children (default 2)
run at once per app process; others wait (`gradviz.check.sandbox.slots`).

What this still does NOT protect against:

- Kernel bugs: namespaces, Landlock and seccomp are only as strong as the kernel. On a
  kernel without them, the missing fences are named in ``protections`` and only the
  audit hook (advisory: ctypes goes around it) stands in their place.
- Reading what the installation holds: site-packages and the gradviz package are readable.
- Timing and shared-cache side channels; CPU taken from other processes within the limits.
- The JSON result is data the user's code controls (it may write its own result record),
  so never treat it as proof (e.g. of a passed exercise).

For public deployments you can also turn user code off: set ``GRADVIZ_DISABLE_USER_CODE=1``
in the app's environment; `run_sandboxed` then raises `UserCodeDisabled`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradviz.check.sandbox.child import ISOLATION_ENV_VAR, USER_CODE_FILENAME
from gradviz.check.sandbox.process import Child, kill_group, remove_tree, start_child, stop_child
from gradviz.check.sandbox.slots import MAX_SANDBOXES_ENV_VAR, claim_now, sandbox_slot
from gradviz.check.sandbox.spares import SparePool
from gradviz.errors import ArgumentError, UserCodeDisabled

__all__ = [
    "DISABLE_ENV_VAR",
    "ISOLATION_ENV_VAR",
    "KINDS",
    "Limits",
    "MAX_SANDBOXES_ENV_VAR",
    "Protection",
    "SandboxResult",
    "TASKS",
    "USER_CODE_FILENAME",
    "UserCodeDisabled",  # defined in gradviz.errors with every error type; kept here too
    "isolation_required",
    "keep_spare",
    "probe_protections",
    "run_sandboxed",
    "user_code_enabled",
]

# The only code a child may be asked to run: task name -> "module:function". A task takes
# the JSON payload and returns JSON data. Register a task with one line here.
TASKS: dict[str, str] = {
    "exec": "gradviz.check.sandbox.child:exec_task",
    "lab.check": "gradviz.check.lab:check_source",
}

DISABLE_ENV_VAR = UserCodeDisabled.env_var
KINDS = ("ok", "error", "timeout", "memory", "crash", "output", "refused", "exit")

# The folder holding the gradviz package goes on the child's sys.path; only the package
# itself (not the rest of a checkout) is readable from the child.
_PACKAGE_DIR = Path(__file__).resolve().parents[2]
_PACKAGE_ROOT = str(_PACKAGE_DIR.parent)
# Tests name protections here to see how a machine without them is handled.
_SKIP_PROTECTIONS: tuple[str, ...] = ()
_EXCERPT_CHARS = 20_000
_READ_CHUNK = 65_536


def user_code_enabled() -> bool:
    """False when the environment turns user code off (``GRADVIZ_DISABLE_USER_CODE=1``)."""
    value = os.environ.get(DISABLE_ENV_VAR, "").strip().lower()
    return value in ("", "0", "false", "no", "off")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one sandboxed run may use. Sizes in bytes, memory in MiB ("MB" in messages).

    memory_mb caps the address space, not resident memory: ``import torch`` alone maps
    about 0.8 GB with one thread, so the default leaves several GB of headroom.
    """

    cpu_seconds: float = 10.0
    memory_mb: int = 4096
    wall_seconds: float = 20.0
    max_processes: int = 64
    max_output_bytes: int = 1_000_000
    max_file_bytes: int = 16_000_000
    max_open_files: int = 256

    def __post_init__(self) -> None:
        minimums = {"memory_mb": 128, "max_open_files": 16}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            integral = field.type in ("int", int)
            wanted = "a whole number" if integral else "a number of seconds"
            if (
                isinstance(value, bool)
                or not isinstance(value, int if integral else (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ArgumentError(
                    field.name, value, f"use {wanted} above 0, e.g. {field.default!r}"
                )
            floor = minimums.get(field.name)
            if floor is not None and value < floor:
                need = {"memory_mb": "Python alone needs about 100 MB of address space"}
                raise ArgumentError(
                    field.name,
                    value,
                    f"{need.get(field.name, 'Python needs a few')}; use at least {floor}",
                )


@dataclass(frozen=True)
class Protection:
    """One fence the child tried to put up: applied or not, and why (what it covers)."""

    name: str
    applied: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {'applied' if self.applied else 'MISSING'} ({self.reason})"


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended.

    kind is one of `KINDS`; error is a one-line message (None when ok); traceback is the
    user's traceback trimmed to their own code; stdout and stderr are capped excerpts;
    protections maps each fence the child tried (name) to a `Protection` saying whether
    it was applied on this machine and why; empty when the child died before reporting.
    """

    ok: bool
    value: Any
    error: str | None
    kind: str
    stdout: str
    stderr: str
    elapsed: float
    network_isolated: bool
    traceback: str = ""
    protections: dict[str, Protection] = dataclasses.field(default_factory=dict)

    @property
    def missing_protections(self) -> tuple[Protection, ...]:
        """The fences this machine could not apply (empty when every one is up)."""
        return tuple(p for p in self.protections.values() if not p.applied)

    def __str__(self) -> str:
        if self.ok:
            text = repr(self.value)
            if len(text) > 200:
                text = text[:197] + "..."
            return f"ok in {self.elapsed:.2f} s: {text}"
        lines = [f"{self.kind} after {self.elapsed:.2f} s: {self.error}"]
        if self.traceback:
            lines.append(self.traceback.rstrip())
        return "\n".join(lines)


def isolation_required() -> bool:
    """True when ``GRADVIZ_REQUIRE_ISOLATION=1``: user code runs only with every fence up."""
    value = os.environ.get(ISOLATION_ENV_VAR, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def run_sandboxed(
    task: str,
    payload: dict,
    limits: Limits | None = None,
    *,
    on_wait: Callable[[int], None] | None = None,
) -> SandboxResult:
    """Run the registered `task` on `payload` (JSON data) in a fresh, limited child process.

    At most ``GRADVIZ_MAX_SANDBOXES`` (default 2) children run at once in this process;
    a call beyond that waits for a free slot, calling ``on_wait(busy)`` first so a page
    can say it is waiting. Never raises for anything the child does: every ending is a
    `SandboxResult`. Raises `UserCodeDisabled` when user code is turned off and
    `ArgumentError` for bad arguments.
    """
    if not user_code_enabled():
        raise UserCodeDisabled(os.environ.get(DISABLE_ENV_VAR, ""))
    if not isinstance(task, str) or task not in TASKS:
        raise ArgumentError("task", task, f"use one of {sorted(TASKS)} (see parent.TASKS)")
    if not isinstance(payload, dict):
        raise ArgumentError("payload", payload, "pass a dict of JSON data, e.g. {'code': '...'}")
    if limits is None:
        limits = Limits()
    elif not isinstance(limits, Limits):
        raise ArgumentError("limits", limits, "pass a sandbox.parent.Limits(...) or None")
    try:
        line = json.dumps(payload, allow_nan=True).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise ArgumentError("payload", payload, f"use only JSON data ({exc})") from None

    if on_wait is not None and not callable(on_wait):
        raise ArgumentError("on_wait", on_wait, "pass a function of one int (busy slots) or None")
    head = _head(task, limits, warm=False)
    spare = _SPARES.take(_head(task, limits, warm=True))
    try:
        with sandbox_slot(on_wait, _SPARES.evict, held=spare[1] if spare else None):
            child = spare[0] if spare else start_child(head)
            try:
                return _Run(line, limits, child).run()
            finally:
                remove_tree(child.workdir)
                remove_tree(child.root)
    finally:
        _SPARES.refill()  # the slot just freed may hold the next spare


def keep_spare(task: str, limits: Limits | None = None) -> None:
    """From now on keep one child for `task` started ahead (fenced, task imported, warmed
    up), so a `run_sandboxed` call with these limits skips the start-up. Each spare serves
    one run only. For apps: a library call site needs nothing of this."""
    if not isinstance(task, str) or task not in TASKS:
        raise ArgumentError("task", task, f"use one of {sorted(TASKS)} (see parent.TASKS)")
    if user_code_enabled():
        _SPARES.want(_head(task, limits or Limits(), warm=True))


def _head(task: str, limits: Limits, *, warm: bool) -> bytes:
    """The first request line: how to fence and what to load (JSON on one line)."""
    return json.dumps({
        "task": TASKS[task],
        "limits": dataclasses.asdict(limits),
        "sys_path": [_PACKAGE_ROOT],
        "readable": [str(_PACKAGE_DIR)],
        "require_isolation": isolation_required(),
        "skip_protections": list(_SKIP_PROTECTIONS),
        "warm": warm,
    }).encode() + b"\n"


_SPARES: SparePool[Child] = SparePool(
    start_child, lambda c: c.proc.poll() is None, stop_child, claim_now
)


_PROBE_LIMITS = Limits(wall_seconds=20, cpu_seconds=5, memory_mb=512)


def probe_protections() -> dict[str, Protection]:
    """Start one empty child and report which protections this machine applies."""
    return run_sandboxed("exec", {"code": "result = None"}, _PROBE_LIMITS).protections


class _Run:
    """One child process: feed it its payload, read it within the limits, then judge it."""

    def __init__(self, payload_line: bytes, limits: Limits, child: Child) -> None:
        self.request = payload_line
        self.child = child
        self.limits = limits
        self.out = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
        self.stopped: str | None = None  # why the parent killed the child, if it did

    def run(self) -> SandboxResult:
        proc, result_read = self.child.proc, self.child.result_read
        start = time.monotonic()  # a spare's wall time counts from here, not from its start
        try:
            self._pump(proc, result_read, start + self.limits.wall_seconds)
            status, cpu = self._end(proc, start + self.limits.wall_seconds)
        finally:
            if proc.returncode is None:  # _end did not get to reap it: kill and reap here
                kill_group(proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            os.close(result_read)
        return self._judge(status, cpu, time.monotonic() - start)

    def _pump(self, proc: subprocess.Popen, result_fd: int, deadline: float) -> None:
        """Send the request and read stdout, stderr and results until EOF or a limit."""
        assert proc.stdin and proc.stdout and proc.stderr  # noqa: S101 - PIPE was asked for
        selector = selectors.DefaultSelector()
        names = {
            proc.stdout.fileno(): "stdout",
            proc.stderr.fileno(): "stderr",
            result_fd: "result",
        }
        for fd in names:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        stdin_fd = proc.stdin.fileno()
        os.set_blocking(stdin_fd, False)
        selector.register(stdin_fd, selectors.EVENT_WRITE)
        pending = memoryview(self.request)
        printed_cap = self.limits.max_output_bytes
        try:
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stopped = "timeout"
                    return
                for key, _ in selector.select(remaining):
                    fd = key.fd
                    if fd == stdin_fd:
                        try:
                            pending = pending[os.write(fd, pending[:_READ_CHUNK]) :]
                        except BlockingIOError:
                            continue
                        except OSError:  # the child died before reading it all
                            pending = pending[:0]
                        if not pending:
                            selector.unregister(fd)
                            proc.stdin.close()
                        continue
                    try:
                        data = os.read(fd, _READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if not data:
                        selector.unregister(fd)
                        continue
                    name = names[fd]
                    buffer = self.out[name]
                    buffer += data
                    if name == "result":
                        if len(buffer) > printed_cap:
                            self.stopped = "result"
                            return
                    elif len(self.out["stdout"]) + len(self.out["stderr"]) > printed_cap:
                        self.stopped = "output"
                        return
        finally:
            selector.close()

    def _end(self, proc: subprocess.Popen, deadline: float) -> tuple[int | None, float]:
        """Wait (until the deadline) for the child to exit, kill its group, then reap it.

        The group is killed while the leader is still an unreaped zombie, so its process
        group id cannot have been reused by an unrelated process.
        """
        if self.stopped is None:
            while True:
                try:
                    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:  # already reaped: nothing to wait for
                    break
                if info is not None:
                    break
                if time.monotonic() >= deadline:
                    self.stopped = "timeout"
                    break
                time.sleep(0.005)
        kill_group(proc.pid)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:  # somebody else reaped it
            proc.returncode = -1
            return None, 0.0
        proc.returncode = os.waitstatus_to_exitcode(status)
        return status, usage.ru_utime + usage.ru_stime

    def _judge(self, status: int | None, cpu: float, elapsed: float) -> SandboxResult:
        limits = self.limits
        setup, record = _records(bytes(self.out["result"]))
        stderr_text = self.out["stderr"].decode("utf-8", "replace")
        kind, value, error, tb = "crash", None, None, ""

        signum = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
        exit_code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        cpu_spent = signum in (signal.SIGXCPU, signal.SIGKILL) and cpu >= limits.cpu_seconds - 0.05

        if self.stopped == "timeout":
            kind = "timeout"
            error = f"timed out after {limits.wall_seconds:.1f} s of wall time (infinite loop?)"
        elif self.stopped == "output":
            kind, error = "output", f"printed more than {_size(limits.max_output_bytes)} of output"
        elif self.stopped == "result":
            kind = "output"
            error = f"returned a result larger than {_size(limits.max_output_bytes)}"
        elif cpu_spent or signum == signal.SIGXCPU:
            kind = "timeout"
            error = f"used more than {limits.cpu_seconds:.1f} s of CPU time (busy loop?)"
        elif exit_code == 0 and record is not None:
            sent = record.get("kind")
            if not isinstance(sent, str) or sent not in KINDS:
                kind, error = "error", f"the sandbox child sent an unknown result kind {sent!r}"
            else:
                kind = sent
                value, error, tb = (
                    record.get("value"),
                    record.get("error"),
                    record.get("traceback") or "",
                )
        elif signum is not None:
            kind, error = _describe_signal(signum, stderr_text, limits)
        elif exit_code is not None:
            kind = "exit"
            error = f"exited with os._exit({exit_code}) before returning a result"
            if (
                exit_code == 1
                and setup is None
                and "Traceback (most recent call last)" in stderr_text
            ):
                kind = "error"
                last = stderr_text.strip().splitlines()[-1]
                error = f"the sandbox child failed before running the task: {last}"
        else:
            kind, error = "crash", "the sandbox child vanished (reaped by someone else)"

        return SandboxResult(
            ok=kind == "ok",
            value=value if kind == "ok" else None,
            error=None if kind == "ok" else (error or kind),
            kind=kind,
            stdout=_excerpt(self.out["stdout"]),
            stderr=_excerpt(self.out["stderr"]),
            elapsed=elapsed,
            network_isolated=bool(setup and setup.get("network_isolated")),
            traceback=tb if isinstance(tb, str) else "",
            protections=_protections(setup),
        )


_CRASHES = {
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "arithmetic error",
}


def _describe_signal(signum: int, stderr_text: str, limits: Limits) -> tuple[str, str]:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    where = _user_line_from_faulthandler(stderr_text)
    if "bad_alloc" in stderr_text or "Cannot allocate memory" in stderr_text:
        return (
            "memory",
            f"used more than {limits.memory_mb} MB of memory (the crash was {name}){where}",
        )
    if name in _CRASHES:
        return "crash", (
            f"crashed with {name} ({_CRASHES[name]}) — a C extension or ctypes call failed{where}"
        )
    if name == "SIGABRT":
        return "crash", f"crashed with SIGABRT (abort) — a C or C++ library gave up{where}"
    if name == "SIGSYS":
        return "refused", f"refused: the system-call filter stopped a forbidden call{where}"
    return "crash", f"was killed by {name}{where}"


def _user_line_from_faulthandler(stderr_text: str) -> str:
    # faulthandler prints the innermost frame first: File "<user code>", line 2 in <module>
    marker = f'File "{USER_CODE_FILENAME}", line '
    index = stderr_text.find(marker)
    if index < 0:
        return ""
    digits = ""
    for char in stderr_text[index + len(marker) :]:
        if not char.isdigit():
            break
        digits += char
    return f" at line {digits} of your code" if digits else ""


def _records(data: bytes) -> tuple[dict | None, dict | None]:
    """The first setup record and the last result record on the result channel."""
    setup = result = None
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("type") == "setup" and setup is None:
            setup = record
        elif record.get("type") == "result":
            result = record
    return setup, result


def _protections(setup: dict | None) -> dict[str, Protection]:
    found = setup.get("protections") if setup else None
    if not isinstance(found, dict):
        return {}
    return {
        str(name): Protection(str(name), bool(p.get("applied")), str(p.get("reason", "")))
        for name, p in found.items()
        if isinstance(p, dict)
    }


def _excerpt(data: bytes | bytearray) -> str:
    text = bytes(data).decode("utf-8", "replace")
    if len(text) <= _EXCERPT_CHARS:
        return text
    half = _EXCERPT_CHARS // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half:,} characters left out] ...\n{text[-half:]}"


def _size(count: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"
