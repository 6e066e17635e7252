"""Starting and ending one sandbox child process (`parent` runs it, `spares` keeps it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("child.py")


@dataclass
class Child:
    proc: subprocess.Popen
    result_read: int
    workdir: str
    root: str


def start_child(head: bytes) -> Child:
    workdir = tempfile.mkdtemp(prefix="gradviz-sandbox-")
    # An empty mount point for the child's private root (see fences.private_view).
    root = tempfile.mkdtemp(prefix="gradviz-root-")
    result_read, result_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-u", "-X", "faulthandler", str(CHILD),
             str(result_write), root],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(result_write,), cwd=workdir, env=child_env(workdir),
            start_new_session=True,
        )  # fmt: skip
    except BaseException:
        os.close(result_read)
        remove_tree(workdir)
        remove_tree(root)
        raise
    finally:
        os.close(result_write)
    assert proc.stdin is not None  # noqa: S101 - PIPE was asked for
    with contextlib.suppress(OSError):  # a child that died at once is judged by the run
        proc.stdin.write(head)  # one short line: fits the pipe, never blocks
        proc.stdin.flush()
    return Child(proc, result_read, workdir, root)


def stop_child(child: Child) -> None:
    kill_group(child.proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
        child.proc.wait(timeout=5)
    for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
        if stream is not None:
            stream.close()
    os.close(child.result_read)
    remove_tree(child.workdir)
    remove_tree(child.root)


def child_env(workdir: str) -> dict[str, str]:
    # Nothing of the app's environment (tokens, proxies, PYTHON*) reaches user code. One
    # thread per library keeps torch's address space small and CPU use predictable.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def remove_tree(path: str) -> None:
    def make_writable_and_retry(function: Any, failed: str, _exc: Any) -> None:
        # User code may have made a file or directory read-only; undo that and retry.
        try:
            os.chmod(os.path.dirname(failed), stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
            function(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)
