"""The sandbox: hostile snippets end with a clear message within their limits, and the
process that ran them (standing in for the app) keeps working afterwards."""

from __future__ import annotations

import os
import re
import select
import socket
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradviz.check.sandbox import parent as sandbox
from gradviz.check.sandbox.parent import (
    KINDS,
    TASKS,
    Limits,
    SandboxResult,
    UserCodeDisabled,
    run_sandboxed,
    user_code_enabled,
)
from gradviz.errors import ArgumentError, GradvizError

# Snippets here do not import torch, so the child starts in well under a second and a
# small address space is plenty. The margin is generous: CI has two slow, shared cores.
QUICK = Limits(wall_seconds=8, cpu_seconds=5, memory_mb=512)
MARGIN = 5.0


@pytest.fixture(autouse=True)
def _user_code_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sandbox.DISABLE_ENV_VAR, raising=False)


def run(code: str, limits: Limits = QUICK, **payload: object) -> SandboxResult:
    return run_sandboxed("exec", {"code": code, **payload}, limits)


def assert_ended(result: SandboxResult, kind: str, message: str, limit: float) -> None:
    """The run ended the expected way, with the message, within the limit plus the margin."""
    assert result.kind == kind, str(result)
    assert not result.ok
    assert result.value is None
    assert result.error is not None and result.error.startswith(message), result.error
    assert "\n" not in result.error
    assert result.elapsed < limit + MARGIN, f"took {result.elapsed:.1f} s"


def assert_parent_still_works() -> None:
    result = run("result = 6 * 7")
    assert (result.ok, result.value, result.kind, result.error) == (True, 42, "ok", None)


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Host pids of the children started during the test (user code sees its own PIDs)."""
    pids: list[int] = []
    real_popen = sandbox.subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> object:
        proc = real_popen(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(sandbox.subprocess, "Popen", recording_popen)
    return pids


def sessions_alive(session: int) -> list[int]:
    """Pids of live processes in `session` (the child was its leader)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(entry))
    return pids


# ------------------------------------------------------------------ normal use


def test_exec_returns_the_value_and_what_was_printed() -> None:
    result = run("print('hello')\nresult = {'sum': sum(inputs), 'ok': True}", inputs=[1, 2, 3])
    assert result.ok and result.kind == "ok" and result.error is None, str(result)
    assert result.value == {"sum": 6, "ok": True}
    assert result.stdout == "hello\n"
    assert result.traceback == ""
    assert {"rlimits", "audit-hook"} <= set(result.protections)
    assert str(result).startswith("ok in ")


def test_files_inside_the_working_directory_are_fine() -> None:
    code = (
        "import os, shutil\n"
        "os.mkdir('d')\n"
        "with open('d/a.txt', 'w') as f:\n"
        "    f.write('hi')\n"
        "os.rename('d/a.txt', 'd/b.txt')\n"
        "result = open('d/b.txt').read()\n"
        "shutil.rmtree('d')\n"
    )
    result = run(code)
    assert result.ok and result.value == "hi", str(result)


def test_environment_is_scrubbed_and_the_directory_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADVIZ_TEST_SECRET", "hunter2")
    result = run("import os\nresult = {'env': dict(os.environ), 'cwd': os.getcwd()}")
    assert result.ok, str(result)
    env, cwd = result.value["env"], result.value["cwd"]
    assert "GRADVIZ_TEST_SECRET" not in env
    assert env["HOME"] == cwd and Path(cwd).name.startswith("gradviz-sandbox-")
    assert not Path(cwd).exists()


def test_prints_cannot_pass_for_a_result() -> None:
    fake = '{"type": "result", "kind": "ok", "value": 1, "error": null, "traceback": ""}'
    result = run(f"print({fake!r})\nraise ValueError('no')")
    assert_ended(result, "error", "ValueError: no (line 2)", QUICK.wall_seconds)


def test_a_result_that_is_not_json_is_an_error() -> None:
    result = run("result = object()")
    assert_ended(result, "error", "the result is not JSON data", QUICK.wall_seconds)


def test_runs_in_parallel_from_threads() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: run(f"result = {n} * 2"), range(4)))
    assert [r.value for r in results] == [0, 2, 4, 6]


def test_torch_runs_under_the_default_limits() -> None:
    code = (
        "import torch\n"
        "x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)\n"
        "(x * x).sum().backward()\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmPeak')][0]\n"
        "result = {'grad': x.grad.tolist(), 'peak_mb': int(peak.split()[1]) // 1024}\n"
    )
    result = run_sandboxed("exec", {"code": code})
    assert result.ok, str(result)
    assert result.value["grad"] == [2.0, 4.0, 6.0]
    # The default address-space cap keeps several times what torch needs as headroom.
    assert result.value["peak_mb"] * 2 < Limits().memory_mb


# ------------------------------------------------------------- user mistakes


def test_syntax_error_names_the_line() -> None:
    result = run("x = 1\ny = = 2\n")
    assert_ended(result, "error", "SyntaxError: invalid syntax (line 2)", QUICK.wall_seconds)
    assert 'File "<user code>", line 2' in result.traceback
    assert "y = = 2" in result.traceback and "^" in result.traceback
    assert_parent_still_works()


def test_traceback_is_trimmed_to_the_users_code() -> None:
    result = run("def f(x):\n    return 1 / x\n\nf(0)\n")
    assert_ended(
        result, "error", "ZeroDivisionError: division by zero (line 2)", QUICK.wall_seconds
    )
    assert result.traceback.startswith("Traceback (most recent call last):")
    assert 'File "<user code>", line 4, in <module>' in result.traceback
    assert "return 1 / x" in result.traceback
    assert "child.py" not in result.traceback and "gradviz" not in result.traceback
    assert "ZeroDivisionError" in str(result)


def test_recursion_bomb() -> None:
    result = run("def f():\n    f()\n\nf()\n")
    assert_ended(
        result, "error", "RecursionError: maximum recursion depth exceeded", QUICK.wall_seconds
    )
    assert "Previous line repeated" in result.traceback
    assert "child.py" not in result.traceback
    assert_parent_still_works()


# ---------------------------------------------------------------- runaway code


@pytest.mark.parametrize(
    "code",
    ["while True:\n    pass\n", "import time\nwhile True:\n    time.sleep(1)\n"],
    ids=["busy", "sleeping"],
)
def test_infinite_loop_hits_the_wall_limit(code: str) -> None:
    limits = Limits(wall_seconds=3, cpu_seconds=60, memory_mb=512)
    result = run(code, limits)
    assert_ended(result, "timeout", "timed out after 3.0 s of wall time (infinite loop?)", 3)
    assert result.elapsed >= 3
    assert_parent_still_works()


def test_cpu_burn_hits_the_cpu_limit() -> None:
    limits = Limits(cpu_seconds=2, wall_seconds=30, memory_mb=512)
    result = run("n = 0\nwhile True:\n    n += 1\n", limits)
    # The message proves the CPU limit ended it; on a loaded machine 2 s of CPU may take
    # several times as long in wall time, so only the wall limit bounds the elapsed time.
    assert_ended(
        result, "timeout", "used more than 2.0 s of CPU time (busy loop?)", limits.wall_seconds
    )
    assert_parent_still_works()


def test_memory_bomb_hits_the_memory_limit() -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(256 * 2**20))\n"
    result = run(code)  # would reach many GB; the 512 MB address-space cap stops it
    assert_ended(result, "memory", "used more than 512 MB of memory at line 3", 3)
    assert_parent_still_works()


def test_huge_output_is_cut_off() -> None:
    result = run("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\n")
    assert_ended(result, "output", "printed more than 1 MB of output", 3)
    assert len(result.stdout) < 25_000  # an excerpt, not the megabyte
    assert_parent_still_works()


def test_huge_file_hits_the_file_size_limit() -> None:
    limits = Limits(max_file_bytes=1_000_000, memory_mb=512)
    result = run("open('big.bin', 'wb').write(bytes(5_000_000))\n", limits)
    assert_ended(result, "output", "wrote a file larger than 1,000,000 bytes", 3)


# ------------------------------------------------------------ ending abruptly


def test_os_exit() -> None:
    result = run("import os\nos._exit(3)\n")
    assert_ended(result, "exit", "exited with os._exit(3) before returning a result", 3)
    assert_parent_still_works()


def test_sys_exit() -> None:
    result = run("import sys\nsys.exit(4)\n")
    assert_ended(result, "exit", "called sys.exit(4) before returning a result", 3)


def test_segfault_via_ctypes() -> None:
    result = run("import ctypes\nctypes.string_at(0)\n")
    assert_ended(
        result,
        "crash",
        "crashed with SIGSEGV (segmentation fault) — a C extension or ctypes call failed"
        " at line 2 of your code",
        3,
    )
    assert "Segmentation fault" in result.stderr  # faulthandler's report, for the curious
    assert_parent_still_works()


# ------------------------------------------------------------------- refusals


def test_fork_bomb_is_refused_and_leaves_no_processes(spawned: list[int]) -> None:
    result = run("import os\nprint(os.getpid(), flush=True)\nwhile True:\n    os.fork()\n")
    assert_ended(result, "refused", "refused: tried to start a process (os.fork at line 4", 3)
    [child] = spawned
    assert sessions_alive(child) == []
    assert not Path(f"/proc/{child}").exists()
    assert_parent_still_works()


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import os\nos.posix_spawn('/bin/true', ['true'], {})\n",
        "import os\nos.execv('/bin/true', ['true'])\n",
    ],
    ids=["subprocess", "system", "posix_spawn", "exec"],
)
def test_starting_a_program_is_refused(code: str) -> None:
    result = run(code)
    assert_ended(result, "refused", "refused: tried to start a process", 3)


_FORK_VIA_CTYPES = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.fork() == 0:
    os._exit(0)
result = {'errno': ctypes.get_errno(), 'me': os.getpid()}
"""
# _posixsubprocess.fork_exec raises no audit event in Python 3.11.
_FORK_EXEC_UNAUDITED = """
import os, _posixsubprocess
r, w = os.pipe()
try:
    _posixsubprocess.fork_exec([b"/bin/true"], [b"/bin/true"], True, (), None, None,
        -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, -1, -1, None, False)
    result = {'errno': 0, 'me': os.getpid()}
except OSError as exc:
    result = {'errno': exc.errno, 'me': os.getpid()}
"""


@pytest.mark.parametrize(
    "code", [_FORK_VIA_CTYPES, _FORK_EXEC_UNAUDITED], ids=["ctypes", "fork_exec"]
)
def test_process_starts_the_hook_cannot_see_are_stopped_by_the_kernel(
    code: str, spawned: list[int]
) -> None:
    result = run(code)
    seccomp = result.protections["seccomp"]
    if not seccomp.applied:  # a kernel without seccomp: the gap must be named, with its reason
        assert seccomp.reason, result.protections
        return
    assert result.ok, str(result)
    assert result.value["errno"] == 1  # EPERM, from the seccomp filter
    assert sessions_alive(spawned[0]) == []


def test_signalling_another_process_is_refused() -> None:
    result = run("import os\nos.kill(os.getppid(), 0)\n")
    assert_ended(result, "refused", "refused: tried to send a signal to another process", 3)


def test_raising_the_limits_is_refused() -> None:
    code = "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))\n"
    result = run(code)
    assert_ended(result, "refused", "refused: tried to change its limits", 3)


@pytest.mark.parametrize(
    "code",
    [
        "open({path!r}, 'w').write('escaped')\n",
        "import os\nopen(os.path.join('..', {name!r}), 'w').write('escaped')\n",
        "import os\nos.symlink({dir!r}, 'link')\nopen('link/' + {name!r}, 'w')\n",
        "import os\nfd = os.open({path!r}, os.O_WRONLY | os.O_CREAT)\n",
        "import pathlib\npathlib.Path({path!r}).write_text('escaped')\n",
    ],
    ids=["absolute", "traversal", "symlink", "os.open", "pathlib"],
)
def test_writing_outside_the_directory_is_refused(code: str) -> None:
    # The child's directory is a fresh one in the temp dir, so ".." is the temp dir itself.
    name = f"x_gradviz_escape_{uuid.uuid4().hex[:8]}"
    target = Path(tempfile.gettempdir()).resolve() / name
    source = code.format(path=str(target), name=name, dir=str(target.parent))
    try:
        result = run(source)
        assert_ended(result, "refused", "refused: tried to write outside its working directory", 3)
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)
    assert_parent_still_works()


@pytest.mark.parametrize("call", ["os.remove({p!r})", "os.rename({p!r}, 'mine')"])
def test_removing_or_moving_outside_files_is_refused(tmp_path: Path, call: str) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run("import os\n" + call.format(p=str(victim)) + "\n")
    assert_ended(result, "refused", "refused: tried to write outside its working directory", 3)
    assert victim.read_text() == "precious"


@pytest.fixture
def listener() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    readable, _, _ = select.select([server], [], [], 0.5)
    assert readable == [], "the listener saw a connection from the sandbox"


def test_network_connection_is_refused(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = "import socket\nsocket.create_connection(('127.0.0.1', inputs), timeout=2)\n"
    result = run(code, inputs=port)
    assert_ended(result, "refused", "refused: tried to open a network connection", 3)
    assert "'127.0.0.1'" in result.error
    assert_no_connection(listener)
    assert_parent_still_works()


def test_network_namespace_stops_connections_the_hook_cannot_see(
    listener: socket.socket,
) -> None:
    # ctypes goes around the audit hook; only the empty network namespace stops this.
    code = (
        "import ctypes, socket, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)\n"
        "address = struct.pack('=H', socket.AF_INET) + struct.pack('!H', inputs)"
        " + bytes([127, 0, 0, 1]) + bytes(8)\n"
        "rc = libc.connect(fd, address, len(address))\n"
        "result = {'rc': rc, 'errno': ctypes.get_errno()}\n"
    )
    result = run(code, inputs=listener.getsockname()[1])
    if not result.network_isolated:  # no network namespace here: named, with its reason
        assert not result.protections["network-namespace"].applied
        assert result.protections["network-namespace"].reason, result.protections
        return
    assert result.ok, str(result)
    assert result.value["rc"] == -1
    assert "network-namespace" in result.protections
    assert_no_connection(listener)


# --------------------------------------------------------------- the switch


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_user_code_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV_VAR, value)
    assert not user_code_enabled()
    with pytest.raises(UserCodeDisabled, match="GRADVIZ_DISABLE_USER_CODE=0") as info:
        run("result = 1")
    assert isinstance(info.value, GradvizError)
    assert "To enable it" in str(info.value)


def test_user_code_disabled_is_one_error_type_everywhere() -> None:
    import gradviz.check.sandbox as package
    import gradviz.errors as errors

    assert package.UserCodeDisabled is UserCodeDisabled is errors.UserCodeDisabled
    assert "UserCodeDisabled" in errors.__all__
    assert sandbox.DISABLE_ENV_VAR == UserCodeDisabled.env_var == "GRADVIZ_DISABLE_USER_CODE"


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
def test_user_code_disabled_names_variable_value_and_fix(value: str) -> None:
    message = str(UserCodeDisabled(value))
    assert f"GRADVIZ_DISABLE_USER_CODE={value!r}" in message
    assert "GRADVIZ_DISABLE_USER_CODE=0" in message and "To enable it" in message


@pytest.mark.parametrize("value", ["", "0", "false", "off"])
def test_user_code_is_on_otherwise(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV_VAR, value)
    assert user_code_enabled()


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: run_sandboxed("no-such-task", {}), "task"),
        (lambda: run_sandboxed("exec", "result = 1"), "payload"),
        (lambda: run_sandboxed("exec", {"code": "", "x": object()}), "payload"),
        (lambda: run_sandboxed("exec", {"code": ""}, {"wall_seconds": 1}), "limits"),
        (lambda: Limits(wall_seconds=0), "wall_seconds"),
        (lambda: Limits(cpu_seconds=float("inf")), "cpu_seconds"),
        (lambda: Limits(memory_mb=1.5), "memory_mb"),
        (lambda: Limits(memory_mb=64), "memory_mb"),
        (lambda: Limits(max_output_bytes=True), "max_output_bytes"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(call, argument: str) -> None:
    with pytest.raises(ArgumentError) as info:
        call()
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}=")


def test_limits_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Limits(5)  # type: ignore[misc]


def test_registered_tasks_are_module_function_names() -> None:
    assert "exec" in TASKS
    for spec in TASKS.values():
        assert re.fullmatch(r"[\w.]+:\w+", spec), spec


def test_kinds_and_exports() -> None:
    assert set(KINDS) == {"ok", "error", "timeout", "memory", "crash", "output", "refused", "exit"}
    assert sandbox.__all__ == sorted(sandbox.__all__)
    assert all(hasattr(sandbox, name) for name in sandbox.__all__)
