"""Tests of the command line (through Typer's CliRunner) and of the package layout."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app

REPO_ROOT = Path(__file__).resolve().parents[1]
TUH_FILE = Path("edf/000/aaaaaaab/s001_2015_03_04/01_tcp_ar/aaaaaaab_s001_t000.edf")


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def small_archive(tmp_path, write_edf) -> Path:
    root = tmp_path / "archive"
    write_edf(Path("archive") / TUH_FILE, duration=20, seed=1)
    (root / TUH_FILE).parents[1].joinpath("aaaaaaab_s001.txt").write_text(
        "CLINICAL HISTORY: Seizures.\nIMPRESSION: Normal EEG.\n")
    write_edf("archive/flat/other.edf", duration=12, seed=2)
    (root / "flat" / "broken.edf").write_text("definitely not an EDF\n")
    return root


def test_scan_json(runner, small_archive):
    result = runner.invoke(app, ["--quiet", "scan", str(small_archive), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"recordings", "failed", "reports", "windows", "failures"} <= set(doc)
    assert doc["recordings"] == 2
    assert doc["failed"] == 1
    assert doc["reports"] == 1
    assert doc["windows"] == 4 + 2  # 20 s and 12 s in 5 s windows
    assert len(doc["failures"]) == 1
    failure = doc["failures"][0]
    assert set(failure) == {"path", "reason"}
    assert failure["path"] == str(small_archive / "flat" / "broken.edf")
    assert "not an EDF/BDF file" in failure["reason"]


def test_scan_json_with_window_and_reports(runner, small_archive, tmp_path):
    side = tmp_path / "reports.jsonl"
    side.write_text(json.dumps({"subject": "other", "session": "",
                                "report": "IMPRESSION: Abnormal EEG."}) + "\n")
    result = runner.invoke(app, ["-q", "scan", str(small_archive), "--json", "--window", "10",
                                 "--reports", str(side)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["recordings"], doc["failed"], doc["reports"], doc["windows"]) == (2, 1, 2, 3)


def test_scan_table(runner, small_archive):
    result = runner.invoke(app, ["-q", "scan", str(small_archive)])
    assert result.exit_code == 0, result.output
    assert re.search(r"recordings\s*│\s*2\s", result.stdout)
    assert re.search(r"failed\s*│\s*1\s", result.stdout)
    assert "refused recordings" in result.stdout  # long paths wrap inside the table


def test_scan_missing_archive(runner, tmp_path):
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["scan", str(missing)])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(missing) in lines[0]


def test_inspect_json(runner, small_archive):
    fname = small_archive / TUH_FILE
    result = runner.invoke(app, ["inspect", str(fname), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["path"] == str(fname)
    assert doc["key"] == ["aaaaaaab", "s001", "01_tcp_ar", "t000"]
    assert doc["layout"] == "tuh"
    assert (doc["subject"], doc["sex"], doc["age"]) == ("aaaaaaab", "F", 53.0)
    assert doc["start"] == "2015-03-04T10:20:30"
    assert doc["date_suspect"] is False
    assert doc["duration_s"] == 20.0
    assert doc["native_sfreq"] == 250.0
    assert doc["n_chans_native"] == 22
    assert len(doc["electrodes"]) == 17
    assert doc["electrodes"]["Fp1"] == "EEG FP1-REF"
    assert doc["windows_5s"] == 4
    assert doc["windows_60s"] == 0


def test_inspect_bad_file(runner, small_archive):
    fname = small_archive / "flat" / "broken.edf"
    result = runner.invoke(app, ["inspect", str(fname)])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(fname) in lines[0]
    assert "not an EDF/BDF file" in lines[0]
    assert result.stdout.strip() == ""


def test_no_args_shows_help(runner):
    result = runner.invoke(app, [])
    assert "scan" in result.output and "inspect" in result.output


def test_packages_import_from_this_checkout():
    import cli
    import db
    import elmsearch
    import indexer

    for module in (cli, db, elmsearch, indexer):
        path = Path(module.__file__).resolve()
        assert path.is_relative_to(REPO_ROOT), (module.__name__, path)
        assert path.parent.name == module.__name__


# Imports flow one way: cli -> indexer -> {db, elmsearch}; elmsearch and db never import each other.
FORBIDDEN_IMPORTS = {"elmsearch": {"db", "indexer", "cli"}, "db": {"elmsearch", "indexer", "cli"},
                     "indexer": {"cli"}}


def _imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, wherever it stands.

    ``module`` is the dotted name of the file (relative imports are resolved against it);
    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count too.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, f"{name}.{alias.name}" if not node.module else name) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in {"import_module", "__import__"}:
                found.append((node.lineno, node.args[0].value))
    return found


def test_import_finder_sees_nested_relative_and_dynamic_imports():
    source = ("import os\n"
              "def f():\n    from db.models import Recording\n"
              "class C:\n    def m(self):\n        import indexer.search as s\n"
              "from .. import cli\nfrom ..db import engine\nfrom . import probe\n"
              "importlib.import_module('indexer.store')\n")
    names = {name for _, name in _imports(source, "elmsearch.models.factory", False)}
    assert names == {"os", "db.models", "indexer.search", "elmsearch.cli", "elmsearch.db",
                     "elmsearch.models.probe", "indexer.store"}
    assert {name for _, name in _imports("from . import x\n", "db", True)} == {"db.x"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_layering_every_module_imports(package):
    files = sorted((REPO_ROOT / package).rglob("*.py"))
    assert len(files) >= 3, files
    bad = []
    for path in files:
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        for line, name in _imports(path.read_text(encoding="utf-8"), module, is_package):
            if name.split(".")[0] in FORBIDDEN_IMPORTS[package]:
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)
