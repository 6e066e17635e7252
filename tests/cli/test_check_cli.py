"""`gradviz check file.py:Class --shapes ...`: exit 0 ok, 1 bug, 2 bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradviz.cli.check import check_command, parse_shapes
from gradviz.errors import ArgumentError
from gradviz.zoo.functions import get_example

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def functions(tmp_path):
    path = tmp_path / "functions.py"
    path.write_text(
        get_example("relu").source + "\n" + get_example("relu_wrong_threshold").source
        + "\nNOT_A_FUNCTION = 3\n"
    )
    return path


def test_correct_function_exits_0(functions, capsys):
    assert check_command([f"{functions}:MyReLU", "--shapes", "4", "--max-examples", "30", "--seed",
                          "0"]) == 0
    assert "MyReLU: ok" in capsys.readouterr().out


def test_bug_exits_1_with_the_report(functions, capsys):
    code = check_command([f"{functions}:ReLUWrongThreshold", "--shapes", "4", "--seed", "0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED jacobian" in out and "@example(" in out


def test_json_output(functions, capsys):
    check_command([f"{functions}:ReLUWrongThreshold", "--shapes", "3", "--seed", "0", "--json",
                   "--checks", "jacobian"])
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["failures"][0]["check"] == "jacobian"
    assert data["checks_run"] == ["runs", "jacobian"]


@pytest.mark.parametrize(
    ("target", "extra", "words"),
    [
        ("{dir}/missing.py:MyReLU", [], "file not found"),
        ("{path}:Nope", [], "no class 'Nope'; Functions in the file: MyReLU, ReLUWrongThreshold"),
        ("{path}:NOT_A_FUNCTION", [], "not a torch.autograd.Function subclass"),
        ("{path}", [], "path/to/file.py:ClassName"),
        ("{path}:MyReLU", ["--shapes", "4y3"], "write one shape per input like 4x3,3"),
        ("{path}:MyReLU", ["--shapes", "4,4"], "takes 1 inputs"),
        ("{path}:MyReLU", ["--max-examples", "0"], "positive int"),
        ("{path}:MyReLU", ["--max-examples", "many"], "invalid int value"),
        ("{path}:MyReLU", ["--dtype", "int8"], "invalid choice"),
        ("{path}:MyReLU", ["--checks", "jacobain"], "unknown check"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(functions, capsys, target, extra, words):
    argv = [target.format(path=functions, dir=functions.parent), *extra]
    assert check_command(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradviz check: error:") and words in err
    assert len(err.splitlines()) == 1


def test_a_file_that_fails_to_import_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import torch\nraise RuntimeError('boom')\n")
    assert check_command([f"{path}:X"]) == 2
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_parse_shapes():
    assert parse_shapes("4x3,3") == [(4, 3), (3,)]
    assert parse_shapes(" 2x2 , () ") == [(2, 2), ()]
    with pytest.raises(ArgumentError):
        parse_shapes("4,,3")


def test_runs_as_a_module(functions):
    result = subprocess.run(
        [sys.executable, "-m", "gradviz.cli.check", f"{functions}:ReLUWrongThreshold", "--shapes",
         "3",
         "--seed", "0", "--max-examples", "50"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "FAILED jacobian" in result.stdout


def test_checks_all_runs_the_double_backward_too(functions, capsys):
    code = check_command([f"{functions}:MyReLU", "--shapes", "4", "--max-examples", "20",
                          "--seed", "0", "--json", "--checks", "all"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    assert "double_backward" in data["checks_run"] and "jacobian" in data["checks_run"]
