"""The shape docs/ARCHITECTURE.md promises: layers that import only downwards, small
modules and functions, thin pages, typed and linted code. A newcomer can trust the map
because CI checks it."""

from __future__ import annotations

import ast
import importlib.resources
import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gradviz"
MODULE_LINES = 600
RULE_FAMILY_LINES = 900  # one NumPy rule family (rule + formula + example per op)
FUNCTION_LINES = 80
PAGE_LINES = 80


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _limit(path: pathlib.Path) -> int:
    rules = PACKAGE / "backward" / "rules"
    return RULE_FAMILY_LINES if rules in path.parents else MODULE_LINES


def test_modules_stay_small():
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > _limit(p)
    }
    limits = f"limit {MODULE_LINES}, rule families {RULE_FAMILY_LINES}"
    assert not too_long, f"split these modules ({limits})"


def test_functions_stay_short():
    files = [*_modules(), *sorted((ROOT / "pages").glob("*.py")), ROOT / "streamlit_app.py"]
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({size})")
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


PAGES = [*sorted((ROOT / "pages").glob("*.py")), ROOT / "streamlit_app.py"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_are_thin(page):
    lines = len(page.read_text(encoding="utf-8").splitlines())
    assert lines <= PAGE_LINES, f"{page.name}: {lines} lines; move logic into gradviz/app"
    assert not _imports(page) & {"torch", "numpy"}, f"{page.name} does math; call the library"


def test_only_the_app_imports_streamlit():
    outside = [
        str(p.relative_to(ROOT))
        for p in _modules()
        if "streamlit" in _imports(p) and PACKAGE / "app" not in p.parents
    ]
    assert not outside


def test_library_imports_without_streamlit():
    code = (
        "import sys, gradviz, gradviz.explorer, gradviz.cli.main\n"
        "assert 'streamlit' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_import_layers_hold():
    exe = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency: pip install -e .[test]"
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_mypy_is_clean():
    # the [tool.mypy] settings of pyproject.toml; the cache (.mypy_cache) makes reruns quick
    done = subprocess.run([sys.executable, "-m", "mypy", "gradviz"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert not _pyproject()["tool"]["mypy"].get("ignore_errors"), "type-check, don't silence"


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    # long lines count too: the limit is 100 columns, not a suggestion
    assert "E501" not in _pyproject()["tool"]["ruff"]["lint"].get("ignore", [])


def test_the_package_ships_its_type_marker():
    # PEP 561: without py.typed in the installed package, checkers ignore gradviz's hints
    assert (importlib.resources.files("gradviz") / "py.typed").is_file()
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["gradviz"]
    assert "py.typed" in package_data, "list py.typed in [tool.setuptools.package-data]"
