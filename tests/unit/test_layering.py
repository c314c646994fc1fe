"""The package's layers: only the command layer knows about the command line."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "chestdet"


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_library_module_imports_the_cli():
    library = [p for p in PACKAGE.rglob("*.py") if p.parent.name != "commands" and p.name != "cli.py"]
    assert len(library) > 10
    offenders = sorted(str(p.relative_to(REPO)) for p in library if "chestdet.cli" in imported_modules(p))
    assert offenders == []


def test_the_check_sees_an_import_of_the_cli(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from chestdet import cli\n", encoding="utf-8")
    assert "chestdet.cli" in imported_modules(sample)
