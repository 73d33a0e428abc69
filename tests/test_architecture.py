"""docs/architecture.md stays true: every module it names exists, every module of the package has its floor there,
and no import (at module level or inside a function) points up a floor or into a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "collapselab"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _named() -> set[str]:
    """Every `path.py` or `folder/` the page names (paths relative to the package)."""
    return {m for m in re.findall(r"`([a-z_][a-z0-9_/]*(?:\.py|/))`", DOC)}


def _floors() -> dict[str, int]:
    """Top-level module or package -> its floor, from the floors table."""
    out: dict[str, int] = {}
    for line in DOC.splitlines():
        m = re.match(r"\| (\d+) \| (.+?) \|", line)
        if m:
            for name in re.findall(r"`([a-z_][a-z0-9_]*)(?:\.py|/)`", m.group(2)):
                out[name] = int(m.group(1))
    return out


def _imports() -> dict[str, set[str]]:
    """Top-level unit (module or package) -> the units it imports, anywhere in its code."""
    out: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).parts
        unit = rel[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                                         if node.module == "collapselab" else [])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                parts = n.split(".")
                if parts[0] == "collapselab" and len(parts) > 1 and parts[1] != unit:
                    out.setdefault(unit, set()).add(parts[1])
    return out


def test_every_module_the_page_names_exists():
    named = _named()
    assert len(named) > 30
    missing = sorted(n for n in named if not ((ROOT / n) if n.startswith(("src/", "tests/")) else PKG / n).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_has_a_floor_and_no_import_points_up():
    floors = _floors()
    units = {p.name.removesuffix(".py") for p in PKG.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(floors) == set(), f"modules without a floor in docs/architecture.md: {units - set(floors)}"
    up = sorted(f"{a} (floor {floors[a]}) imports {b} (floor {floors[b]})"
                for a, bs in _imports().items() for b in bs if b in floors and a in floors and floors[b] > floors[a])
    assert not up, up


def test_a_cli_call_imports_no_scipy_until_a_function_needs_it():
    """scipy's special functions and integrators are imported where they are used: loading the CLI, the run
    lifecycle, the experiment resolver (every built-in family and data source) and the report's aggregation (the
    theory curves) imports no scipy module (scipy.special alone costs every CLI process a third of a second)."""
    import subprocess
    import sys

    code = ("import sys, collapselab.cli, collapselab.runs, collapselab.experiments.resolver, "
            "collapselab.report.aggregate; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
