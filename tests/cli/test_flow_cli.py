"""`gradviz flow PRESET --steps N --out DIR`: CSV, JSON, SVG and PNG of the recorded flow."""

from __future__ import annotations

import csv
import json

from gradviz.cli.main import main


def test_flow_writes_csv_json_svg_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["flow", "regression-1-10-1", "--steps", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "30 of 30 steps kept" in printed and "no gradient-flow warnings" in printed
    rows = list(csv.DictReader((out / "flow.csv").open()))
    assert list(rows[0]) == ["step", "layer", "depth", "kind", "stat", "value", "loss"]
    norms = [r for r in rows if r["kind"] == "grad" and r["stat"] == "norm"]
    assert len(norms) == 30 * 4 and {r["layer"] for r in norms} == {
        "0.weight", "0.bias", "2.weight", "2.bias"
    }
    data = json.loads((out / "flow.json").read_text())
    assert data["preset"] == "regression-1-10-1" and data["steps_done"] == 30
    assert len(data["flow"]["records"]) == 30 and data["diagnoses"] == []
    assert all(r["loss"] is not None for r in data["flow"]["records"])
    svg = (out / "flow.svg").read_bytes()
    assert svg.lstrip().startswith(b"<svg") and b"0.weight" in svg
    assert (out / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flow_bounds_the_record_and_reports_warnings(tmp_path, capsys):
    code = main(["flow", "single-neuron", "--steps", "40", "--capacity", "8", "--lr", "50",
                 "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "flow.json").read_text())
    assert len(data["flow"]["records"]) <= 8 and data["flow"]["stride"] == 8
    assert "warning: lr-too-large at weights" in printed
    assert data["diagnoses"][0]["kind"] == "lr-too-large"


def test_bad_input_exits_2_with_the_fix(tmp_path, capsys):
    assert main(["flow", "quadrant-sdg", "--out", str(tmp_path)]) == 2
    assert "did you mean 'quadrant-sgd'" in capsys.readouterr().err
    assert main(["flow", "two-layer-numpy", "--steps", "3", "--out", str(tmp_path)]) == 2
    assert "no gradients to record" in capsys.readouterr().err
    assert main(["flow", "single-neuron", "--stat", "p99", "--out", str(tmp_path)]) == 2
    assert "--stat" in capsys.readouterr().err
    assert not (tmp_path / "flow.csv").exists()
