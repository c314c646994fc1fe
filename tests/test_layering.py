"""The package's layers: stages import only their own stage and those below it, with no import circle,
and only the command layer knows about the command line."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "chestdet"
# Bottom to top; a stage may import its own and the stages before it. clinical and service are siblings.
STAGES = {"core": 0, "data": 1, "training": 2, "export": 3, "detection": 4, "evaluation": 5,
          "clinical": 6, "service": 6, "commands": 7}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def internal_imports(path: Path, known: set[str]) -> set[str]:
    return {name for name in imported_modules(path) if name in known and name != module_name(path)}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in STAGES else None


def test_every_module_sits_in_a_stage():
    loose = [name for name in package_modules() if name.count(".") >= 1 and stage_of(name) is None
             and name.split(".")[1] not in STAGES]
    assert loose == []


def test_no_module_imports_a_stage_above_its_own():
    modules = package_modules()
    upward = []
    for name, path in modules.items():
        own = stage_of(name)
        for imported in internal_imports(path, set(modules)):
            other = stage_of(imported)
            if own and other and (STAGES[other] > STAGES[own] or (STAGES[other] == STAGES[own] and other != own)):
                upward.append(f"{name} -> {imported}")
    assert upward == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_circle():
    modules = package_modules()
    graph = {name: internal_imports(path, set(modules)) for name, path in modules.items()}
    assert cycles(graph) == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from chestdet.evaluation import metrics\n", encoding="utf-8")
    assert "chestdet.evaluation.metrics" in imported_modules(sample)


def test_no_library_module_imports_the_cli():
    library = [p for p in PACKAGE.rglob("*.py") if p.parent.name != "commands"]
    assert len(library) > 10
    offenders = sorted(str(p.relative_to(REPO)) for p in library if "chestdet.commands.cli" in imported_modules(p))
    assert offenders == []


def test_the_check_sees_an_import_of_the_cli(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from chestdet.commands import cli\n", encoding="utf-8")
    assert "chestdet.commands.cli" in imported_modules(sample)


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 60


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(REPO).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long
