"""The app as a real server: `streamlit run` on a free local port, ready when it answers.

The browser tests, the load test and the app benchmark all drive a real server; this is
the one way they start it (same flags, same health wait, same shutdown). Streamlit runs
in the child, not here.
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

__all__ = ["free_port", "running_app"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    /_stcore/health answers "ok"; stopped (terminate, then kill) when the block ends.
    Output goes to `log` (or nowhere). Raises RuntimeError if it does not come up."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=cwd or script.parent, stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT, env=dict(os.environ) if env is None else env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                where = f"; see {log.name}" if log is not None else ""
                raise RuntimeError(f"the app {script.name} did not start{where}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
