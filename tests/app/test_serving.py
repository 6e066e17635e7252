"""running_server: a server that never comes up is reported with its own last words."""

from __future__ import annotations

import sys

import pytest

from gradviz.app.serving import free_port, running_server


def test_a_server_that_exits_is_named_with_its_log_tail(tmp_path):
    command = [sys.executable, "-c", "print('boom: no port for you'); raise SystemExit(3)"]
    url = f"http://127.0.0.1:{free_port()}/"
    with (open(tmp_path / "server.log", "w") as log, pytest.raises(RuntimeError) as error,
          running_server(command, url, log=log)):
        pytest.fail("the block ran although the server never answered")
    assert "did not start" in str(error.value) and "boom: no port for you" in str(error.value)
