"""Hostile snippets against the sandbox, as the Function Lab would run them (issue 13).

Each snippet is refused or contained with its specific message, nothing outside is read or
written, and a normal run right after it still works (the server keeps serving). Snippets
that go around Python with ctypes report the kernel's answer (errno) as their result, so
the test asserts the kernel fence itself, not only the audit hook.
"""

from __future__ import annotations

import errno
import os
import pickle
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gradviz.check.sandbox import parent as sandbox
from gradviz.check.sandbox.fences import PROTECTIONS
from gradviz.check.sandbox.parent import Limits, SandboxResult, run_sandboxed

# No snippet but the torch ones imports torch: the child starts in a few tenths of a second.
QUICK = Limits(wall_seconds=10, cpu_seconds=5, memory_mb=1024)
SECRET = f"gradviz-secret-{uuid.uuid4().hex}"
CHECKOUT = Path(sandbox.__file__).resolve().parents[3]
HOSTILE_READ = "PermissionError: [Errno 13] refused by the sandbox: "


@pytest.fixture(autouse=True)
def _user_code_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sandbox.DISABLE_ENV_VAR, raising=False)
    monkeypatch.delenv(sandbox.ISOLATION_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files the sandbox must not reach: another session's upload, a victim to overwrite."""
    folder = tmp_path_factory.mktemp("other-session-upload")
    upload = folder / "upload.csv"
    upload.write_text(SECRET)
    os.chmod(folder, 0o755)
    os.chmod(upload, 0o644)  # readable by everyone: only the sandbox's fences stop it
    return {
        "upload": str(upload),
        "folder": str(folder),
        "victim": str(folder / "victim.txt"),
        "parent_pid": str(os.getpid()),
        "checkout": str(CHECKOUT),
        "siblings": str(CHECKOUT.parent),
    }


def run(code: str, limits: Limits = QUICK, inputs: object = None) -> SandboxResult:
    return run_sandboxed("exec", {"code": code, "inputs": inputs}, limits)


def assert_server_keeps_serving() -> None:
    result = run("result = 6 * 7")
    assert (result.ok, result.value, result.kind) == (True, 42, "ok"), str(result)


def assert_nothing_leaked(result: SandboxResult) -> None:
    text = f"{result.value!r} {result.error} {result.stdout} {result.stderr} {result.traceback}"
    assert SECRET not in text, "the secret of another session came back"


@dataclass(frozen=True)
class Hostile:
    name: str
    code: str
    kind: str
    message: str  # the error starts with this; for kind "ok", the repr of the value
    limits: Limits = QUICK


_CTYPES = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def _errno_of(call: str) -> str:
    """A ctypes snippet whose result is (return code, errno) of one raw libc call."""
    return _CTYPES + f"rc = {call}\nresult = [rc, ctypes.get_errno()]\n"


EPERM, ENOENT, EACCES = errno.EPERM, errno.ENOENT, errno.EACCES

BATTERY = [
    # -- reading what belongs to others -------------------------------------------------
    Hostile("etc-passwd", "result = open('/etc/passwd').read()", "error",
            HOSTILE_READ + "open outside the Python installation and the working directory: "
            "'/etc/passwd' (line 1)"),
    Hostile("etc-passwd-ctypes", _errno_of("libc.open(b'/etc/passwd', 0)"), "ok",
            repr([-1, ENOENT])),  # not even there in the private view
    Hostile("list-checkout", "import os\nresult = os.listdir(inputs['checkout'])", "error",
            HOSTILE_READ + "os.listdir outside"),
    Hostile("list-sibling-folders", "import os\nresult = os.listdir(inputs['siblings'])",
            "error", HOSTILE_READ + "os.listdir outside"),
    Hostile("list-root-home", "import os\nresult = os.listdir('/root')", "error",
            HOSTILE_READ + "os.listdir outside"),
    Hostile("other-session-upload", "result = open(inputs['upload']).read()", "error",
            HOSTILE_READ + "open outside"),
    Hostile("other-session-upload-ctypes",
            _errno_of("libc.open(inputs['upload'].encode(), 0)"), "ok", repr([-1, ENOENT])),
    Hostile("parent-mem", "f = open(f\"/proc/{inputs['parent_pid']}/mem\", 'rb')\n"
            "result = f.read(64).hex()", "error", "FileNotFoundError: [Errno 2]"),
    Hostile("parent-environ", "result = open(f\"/proc/{inputs['parent_pid']}/environ\").read()",
            "error", "FileNotFoundError: [Errno 2]"),
    Hostile("ppid-mem", "import os\nf = open(f'/proc/{os.getppid()}/mem', 'rb')\n"
            "result = f.read(64).hex()", "error", "PermissionError: [Errno 13] Permission denied"),
    Hostile("ppid-environ", "import os\nresult = open(f'/proc/{os.getppid()}/environ').read()",
            "error", "PermissionError: [Errno 13] Permission denied"),
    Hostile("only-own-processes", "import os\n"
            "result = sorted(p for p in os.listdir('/proc') if p.isdigit())", "ok",
            repr(["1", "2"])),
    Hostile("symlink-escape", "import os\nos.symlink(inputs['upload'], 'link')\n"
            "result = open('link').read()", "error", HOSTILE_READ + "open outside"),
    Hostile("symlink-escape-ctypes", "import os\nos.symlink(inputs['upload'], 'link')\n"
            + _errno_of("libc.open(b'link', 0)").replace("import ctypes, os\n", "import ctypes\n"),
            "ok", repr([-1, ENOENT])),
    Hostile("hardlink-escape", "import os\nos.link(inputs['upload'], 'mine')\n"
            "result = open('mine').read()", "refused",
            "refused: tried to write outside its working directory (os.link"),
    Hostile("hardlink-escape-ctypes", _errno_of(
            "libc.link(os.path.join(os.__file__).encode(), b'mine')"), "ok", repr([-1, 18])),
    # -- the kernel calls ctypes could make ---------------------------------------------
    Hostile("ptrace-attach-ctypes", _errno_of("libc.ptrace(16, 1, 0, 0)"), "ok",
            repr([-1, EPERM])),
    Hostile("process-vm-readv-ctypes", _errno_of("libc.syscall(310, 1, 0, 0, 0, 0, 0)"), "ok",
            repr([-1, EPERM])),
    Hostile("setuid-root-ctypes", _errno_of("libc.setuid(0)"), "ok", repr([-1, EPERM])),
    Hostile("unshare-ctypes", _errno_of("libc.unshare(0x10000000)"), "ok", repr([-1, EPERM])),
    Hostile("mount-ctypes", _errno_of("libc.mount(b'none', b'.', b'tmpfs', 0, None)"), "ok",
            repr([-1, EPERM])),
    Hostile("kill-init-ctypes", _errno_of("libc.kill(1, 9)"), "ok", repr([-1, EPERM])),
    Hostile("setsid-escape", "import os\nos.setsid()", "error",
            "PermissionError: [Errno 1] Operation not permitted (line 2)"),
    Hostile("io-uring-ctypes", _errno_of("libc.syscall(425, 1, 0)"), "ok", repr([-1, EPERM])),
    # -- writes, processes, network, signals --------------------------------------------
    Hostile("write-outside", "open(inputs['victim'], 'w').write('pwned')", "refused",
            "refused: tried to write outside its working directory (open"),
    Hostile("write-outside-ctypes", _errno_of("libc.open(inputs['victim'].encode(), 0o101, 0o644)"),
            "ok", repr([-1, ENOENT])),
    Hostile("subprocess", "import subprocess\nsubprocess.run(['id'])", "refused",
            "refused: tried to start a process (subprocess.Popen"),
    Hostile("os-system", "import os\nos.system('id')", "refused",
            "refused: tried to start a process (os.system"),
    Hostile("fork-ctypes", _errno_of("libc.fork()"), "ok", repr([-1, EPERM])),
    Hostile("socket", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
            "refused", "refused: tried to open a network connection"),
    Hostile("kill-parent", "import os, signal\nos.kill(int(inputs['parent_pid']), signal.SIGKILL)",
            "refused", "refused: tried to send a signal to another process"),
    Hostile("kill-parent-ctypes", _errno_of("libc.kill(int(inputs['parent_pid']), 0)"), "ok",
            repr([-1, EPERM])),
    # -- runaway code -------------------------------------------------------------------
    Hostile("allocate-20-gb", "block = bytearray(20 * 2**30)", "memory",
            "used more than 1024 MB of memory at line 1"),
    Hostile("busy-loop", "while True:\n    pass", "timeout",
            "used more than 2.0 s of CPU time (busy loop?)",
            Limits(wall_seconds=15, cpu_seconds=2, memory_mb=512)),
    Hostile("deep-recursion", "def f():\n    f()\nf()", "error",
            "RecursionError: maximum recursion depth exceeded"),
    Hostile("gigabyte-of-output", "import sys\nfor _ in range(1000):\n"
            "    sys.stdout.write('x' * 2**20)", "output", "printed more than 1 MB of output"),
    Hostile("system-exit", "raise SystemExit(3)", "exit",
            "called sys.exit(3) before returning a result"),
    Hostile("base-exception", "class Boom(BaseException):\n    pass\nraise Boom('no')", "error",
            "Boom: no (line 3)"),
    Hostile("fd-exhaustion", "files = [open('f%d' % i, 'w') for i in range(10_000)]", "error",
            "OSError: [Errno 24] Too many open files"),
    Hostile("thread-left-running", "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,), name='spin').start()\nresult = 1",
            "error", "left 1 thread running when the code finished (spin): join every thread"),
]  # fmt: skip


@pytest.mark.parametrize("case", BATTERY, ids=[case.name for case in BATTERY])
def test_hostile_snippet_is_refused_or_contained(case: Hostile, outside: dict[str, str]) -> None:
    result = run(case.code, case.limits, inputs=outside)
    assert result.kind == case.kind, str(result)
    if case.kind == "ok":
        assert repr(result.value) == case.message, str(result)
    else:
        assert not result.ok and result.value is None
        assert result.error is not None and result.error.startswith(case.message), result.error
        assert "\n" not in result.error
    assert_nothing_leaked(result)
    assert not Path(outside["victim"]).exists()
    assert Path(outside["upload"]).read_text() == SECRET
    assert_server_keeps_serving()


def test_battery_is_large_enough() -> None:
    assert len(BATTERY) >= 30
    assert len({case.name for case in BATTERY}) == len(BATTERY)


def test_every_protection_is_applied_on_this_machine() -> None:
    # This container allows them all; a machine that does not is reported, not hidden.
    result = run("result = 1")
    assert result.ok, str(result)
    assert tuple(result.protections) == PROTECTIONS
    assert result.missing_protections == (), "\n".join(map(str, result.missing_protections))
    for protection in result.protections.values():
        assert protection.reason and str(protection).startswith(f"{protection.name}: applied")


def test_the_worker_runs_as_nobody_with_no_capabilities() -> None:
    code = (
        "import os\nstatus = open('/proc/self/status').read().splitlines()\n"
        "fields = dict(line.split(':', 1) for line in status)\n"
        "result = {k: fields[k].split() for k in ('Uid', 'Gid', 'CapEff', 'NoNewPrivs',"
        " 'Seccomp')}\nresult['groups'] = os.getgroups()\n"
    )
    result = run(code)
    assert result.ok, str(result)
    assert result.value["Uid"] == ["65534"] * 4 and result.value["Gid"] == ["65534"] * 4
    assert int(result.value["CapEff"][0], 16) == 0
    assert result.value["NoNewPrivs"] == ["1"] and result.value["Seccomp"] == ["2"]
    assert result.value["groups"] == []


def test_only_the_output_pipes_are_open_and_stdin_is_read_only() -> None:
    code = (
        "import os, sys\n"
        "open_fds = []\n"
        "for fd in range(1024):\n"
        "    try:\n        os.fstat(fd)\n        open_fds.append(fd)\n"
        "    except OSError:\n        pass\n"
        "try:\n    os.write(0, b'x')\n    stdin = 'writable'\n"
        "except OSError as exc:\n    stdin = exc.errno\n"
        "result = {'fds': open_fds, 'stdin': stdin}\n"
    )
    result = run(code)
    assert result.ok, str(result)
    fds = result.value["fds"]
    assert fds[:3] == [0, 1, 2] and len(fds) == 4  # + the result pipe, nothing of the app
    assert result.value["stdin"] == errno.EBADF


def test_a_forged_setup_record_does_not_change_the_protections() -> None:
    # User code can write on the result pipe; the parent keeps the first (real) setup record.
    code = (
        "import json, os, sys\nfd = int(sys.argv[1])\n"
        "fake = {'type': 'setup', 'protections': {'landlock': {'applied': False, 'reason': 'x'}}}\n"
        "os.write(fd, b'garbage that is not json\\n' + json.dumps(fake).encode() + b'\\n')\n"
        "result = 'written'\n"
    )
    result = run(code)
    assert result.ok and result.value == "written", str(result)
    assert result.protections["landlock"].applied
    assert result.protections["landlock"].reason.startswith("Landlock ABI")


def test_nothing_outside_the_working_directory_can_be_created(tmp_path: Path) -> None:
    # Every write-capable place the view holds: the read-only installation, /, /proc, /tmp.
    code = _CTYPES + (
        "out = {}\n"
        "for path in (os.__file__ + '.x', '/x', '/tmp/x', inputs + '/x', '/proc/x'):\n"
        "    out[path] = (libc.open(path.encode(), 0o101, 0o644), ctypes.get_errno())\n"
        "result = sorted(set(code for _, code in out.values()))\n"
    )
    result = run(code, inputs=str(tmp_path))
    assert result.ok, str(result)
    assert all(code in (errno.EROFS, errno.EACCES, errno.ENOENT) for code in result.value)
    assert list(tmp_path.iterdir()) == []


def test_sibling_sandboxes_cannot_see_each_other(tmp_path: Path) -> None:
    """A sandbox that holds a secret in its folder and environment while another looks."""
    holder_code = (
        "import os, time\nopen('secret.txt', 'w').write(inputs)\n"
        "print(os.getcwd(), flush=True)\ntime.sleep(6)\nresult = 'held'\n"
    )
    box: dict[str, SandboxResult] = {}
    worker = threading.Thread(target=lambda: box.update(holder=run(holder_code, inputs=SECRET)))
    worker.start()
    try:
        folders = []
        deadline = time.monotonic() + 5
        while not folders and time.monotonic() < deadline:
            folders = [p for p in Path("/tmp").glob("gradviz-sandbox-*/secret.txt")]
            time.sleep(0.05)
        assert folders, "the holder sandbox did not start"
        spy_code = _CTYPES + (
            "out = {'procs': sorted(p for p in os.listdir('/proc') if p.isdigit())}\n"
            "for path in inputs:\n"
            "    out[path] = [libc.open(path.encode(), 0), ctypes.get_errno()]\n"
            "result = out\n"
        )
        result = run(spy_code, inputs=[str(f) for f in folders])
    finally:
        worker.join()
    assert result.ok, str(result)
    assert result.value.pop("procs") == ["1", "2"]
    assert all(answer == [-1, ENOENT] for answer in result.value.values()), result.value
    assert_nothing_leaked(result)
    assert box["holder"].ok and box["holder"].value == "held", str(box["holder"])


def test_torch_settings_in_the_child_do_not_reach_the_parent() -> None:
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    code = (
        "import torch\ntorch.set_default_dtype(torch.float64)\ntorch.set_num_threads(3)\n"
        "result = [str(torch.get_default_dtype()), torch.get_num_threads(),"
        " str(torch.ones(1).dtype)]\n"
    )
    result = run(code, Limits(wall_seconds=60, cpu_seconds=30))
    assert result.ok, str(result)
    assert result.value == ["torch.float64", 3, "torch.float64"]
    assert (torch.get_default_dtype(), torch.get_num_threads()) == (dtype, threads)
    assert torch.ones(1).dtype == dtype
    assert_server_keeps_serving()


class _RunsACommand:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("id > pwned.txt",))


@pytest.mark.parametrize(
    ("weights_only", "kind", "message"),
    [
        ("True", "error", "UnpicklingError: Weights only load failed"),
        ("False", "refused", "refused: tried to start a process (os.system"),
    ],
)
def test_torch_load_of_a_malicious_pickle(weights_only: str, kind: str, message: str) -> None:
    data = pickle.dumps(_RunsACommand()).hex()
    code = (
        "import os, torch\nopen('evil.pt', 'wb').write(bytes.fromhex(inputs))\n"
        f"torch.load('evil.pt', weights_only={weights_only})\n"
        "result = os.path.exists('pwned.txt')\n"
    )
    result = run(code, Limits(wall_seconds=60, cpu_seconds=30), inputs=data)
    assert result.kind == kind, str(result)
    assert result.error.startswith(message), result.error
    assert_server_keeps_serving()


# ------------------------------------------------------- machines without the fences


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    def skip(*names: str) -> None:
        monkeypatch.setattr(sandbox, "_SKIP_PROTECTIONS", names)

    return skip


def test_a_missing_protection_is_named(without) -> None:
    without("landlock")
    result = run("result = 1")
    assert result.ok, str(result)
    assert [p.name for p in result.missing_protections] == ["landlock"]
    assert str(result.protections["landlock"]) == "landlock: MISSING (skipped on request)"


@pytest.mark.parametrize("names", [("landlock",), ("seccomp", "mount-namespace")])
def test_require_isolation_refuses_without_every_protection(
    without, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]
) -> None:
    without(*names)
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "1")
    result = run("open('ran.txt', 'w').write('user code ran')\nresult = 1")
    assert result.kind == "refused", str(result)
    assert result.error.startswith(
        "refused to run your code: GRADVIZ_REQUIRE_ISOLATION=1 and this machine could not apply: "
    ), result.error
    for name in names:
        assert f"{name} (skipped on request)" in result.error
    assert "Run on a kernel that allows them, or unset GRADVIZ_REQUIRE_ISOLATION" in result.error
    assert set(names) <= {p.name for p in result.missing_protections}


def test_require_isolation_runs_when_every_protection_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(sandbox.ISOLATION_ENV_VAR, "1")
    result = run("result = 'ran'")
    assert result.ok and result.value == "ran", str(result)


def test_landlock_alone_still_confines_reads(without, outside: dict[str, str]) -> None:
    # No private view (so no PID namespace and no uid drop either): Landlock must hold.
    without("mount-namespace")
    code = _CTYPES + (
        "out = {}\n"
        "for path in ('/etc/passwd', inputs['upload'], f\"/proc/{inputs['parent_pid']}/mem\","
        " f\"/proc/{inputs['parent_pid']}/environ\"):\n"
        "    out[path] = [libc.open(path.encode(), 0), ctypes.get_errno()]\n"
        "result = out\n"
    )
    result = run(code, inputs=outside)
    assert result.ok, str(result)
    assert all(answer == [-1, EACCES] for answer in result.value.values()), result.value
    assert not result.protections["mount-namespace"].applied
    assert result.protections["landlock"].applied
    assert_nothing_leaked(result)
