"""The widgets in a real JupyterLab: a temporary notebook run in Chromium, then clicked."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import sys

import pytest
from playwright.sync_api import expect

from gradviz.app.serving import free_port as _free_port
from gradviz.app.serving import running_server

ROOT = pathlib.Path(__file__).resolve().parents[2]
CELLS = [
    "import gradviz, ipywidgets\n"
    "from gradviz.zoo.sources import build_source\n"
    "model, loss = build_source('preset:two-layer-nn', float64=True)\n"
    "w = gradviz.widget(loss, model=model, depth=1, height=420)\n"
    "probe = ipywidgets.HTML('<span class=\"probe\">selected=None</span>')\n"
    "w.observe(lambda c: setattr(probe, 'value', f'<span class=\"probe\">selected={c.new}</span>'),"
    " names='selected')\n"
    "ipywidgets.VBox([w, probe])",
    "sw = gradviz.step_widget(loss, model=model, height=420)\nsw",
    "print('kernel sees', w.selected, sw.position, sw.current.node.id)",
]


def _notebook(folder: pathlib.Path) -> pathlib.Path:
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    nb = {
        "cells": [dict(cell, source=src) for src in CELLS],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path = folder / "widgets.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.fixture()
def jupyter(tmp_path):
    """JupyterLab on a free port, serving tmp_path, with this checkout on the kernel's path."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"))
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
        "--allow-root",  # CI runs as root
        "--LabApp.expose_app_in_browser=True",  # the test runs cells through window.jupyterapp
        # Offline: no news feed, update check or extension index.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with open(tmp_path / "jupyter.log", "w") as log, running_server(
        command, f"{url}/api/status?token={token}", cwd=tmp_path, env=env, log=log
    ):
        _notebook(tmp_path)
        yield url, token


def _node(scope, node_id: str):
    return scope.locator("g.node", has=scope.page.locator(f'title:text-is("{node_id}")'))


def _run_all(page) -> None:
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


@pytest.mark.browser
@pytest.mark.slow
def test_widgets_in_jupyterlab(jupyter, page):
    url, token = jupyter
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/lab/tree/widgets.ipynb?token={token}")
    _run_all(page)
    explorer = page.locator(".gv-widget").nth(0)
    stepper = page.locator(".gv-widget").nth(1)
    explorer.locator(".gv-root svg g.node").first.wait_for(timeout=120_000)
    stepper.locator(".gv-root svg g.node").first.wait_for(timeout=120_000)

    # depth=1: the modules are closed boxes; a click opens one (the kernel redraws).
    expect(explorer.locator(".gv-root")).to_have_attribute("data-selected", "")
    _node(explorer, "mod/2").click()
    expect(page.locator(".probe")).to_have_text("selected=mod/2")
    _node(explorer, "n2").wait_for()  # AddmmBackward0 of module 2, drawn once it opened
    expect(explorer.locator(".gv-crumbs button")).to_have_count(2)
    # Hover details: shape and dtype of a parameter, with its name.
    _node(explorer, "n3").hover()
    tip = explorer.locator(".gv-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("2.bias")
    expect(tip).to_contain_text("float64")
    # A click on a node: w.selected in the kernel follows it.
    _node(explorer, "n2").click()
    expect(page.locator(".probe")).to_have_text("selected=n2")
    expect(explorer.locator(".gv-details")).to_contain_text("AddmmBackward0")
    # Search runs in the kernel and comes back as highlights.
    explorer.locator(".gv-search").fill("TBackward")
    expect(explorer.locator(".gv-found")).to_contain_text("nodes match")
    expect(explorer.locator(".gv-root")).not_to_have_attribute("data-highlighted", "0")

    # The step widget: the Step button moves the current node, in the graph and the panel.
    steps = ["n1", "n2", "n3"]  # MseLoss, Addmm, 2.bias: engine order of two-layer-nn
    expect(stepper.locator(".gv-root")).to_have_attribute("data-selected", steps[0])
    step_button = page.get_by_role("button", name="Step ▶")
    for nid in steps[1:]:
        step_button.click()
        expect(stepper.locator(".gv-root")).to_have_attribute("data-selected", nid)
        expect(page.locator(".gradviz-current")).to_have_attribute("data-node", nid)
        if nid == "n2":  # an op: its NumPy reference and error beside the graph
            expect(page.locator(".gradviz-check")).to_contain_text("NumPy check (numpy): agrees")
    # A click on a node in the step widget's graph jumps to that node's step.
    stepper.locator(".gv-toolbar button[data-act=fit]").click()
    _node(stepper, "n10").click()
    expect(page.locator(".gradviz-current")).to_have_attribute("data-node", "n10")

    # What the kernel holds, printed by the last cell run again.
    page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".jp-OutputArea-output", has_text="kernel sees")).to_contain_text(
        "kernel sees n2 9 n10")
    assert errors == []
