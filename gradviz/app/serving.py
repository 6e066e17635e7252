"""The app as a real server: `streamlit run` on a free local port, ready when it answers.

The browser tests, the load test and the app benchmark all drive a real server; this is
the one way they start it (same flags, same health wait, same shutdown), and the Jupyter
browser test starts JupyterLab through the same `running_server`. Streamlit runs in the
child, not here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["free_port", "running_app", "running_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(
    command: list[str],
    ready: str,
    *,
    answer: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: IO[str] | None = None,
    start_seconds: float = 120,
) -> Iterator[subprocess.Popen]:
    """Run `command`, yielding its process once the URL `ready` answers (with exactly
    `answer`, when given); stopped (terminate, then kill) when the block ends. Output goes
    to `log` (or nowhere). Raises RuntimeError, with the log's tail, if it does not come up."""
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT, env=dict(os.environ) if env is None else env,
    )
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=2) as reply:
                    if answer is None or reply.read() == answer:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{Path(command[0]).name} {' '.join(command[1:3])} did not "
                                   f"start{_tail(log)}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: IO[str] | None) -> str:
    if log is None:
        return ""
    log.flush()
    return f"; {log.name} ends:\n" + Path(log.name).read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def running_app(
    script: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: IO[str] | None = None,
    start_seconds: float = 120,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run script` headless on 127.0.0.1, yielding (url, process) once
    /_stcore/health answers "ok"; stopped when the block ends (see `running_server`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with running_server(command, f"{url}/_stcore/health", answer=b"ok", cwd=cwd or script.parent,
                        env=env, log=log, start_seconds=start_seconds) as proc:
        yield url, proc
