"""Docs that cannot drift: every command in the README's and docs/*.md's shell blocks parses with the
command's own parser (flags only, no work), and every repository path they name exists.

Paths under workspace/ are the user's data and the pipeline's outputs, so they are not looked for;
lines with "..." are sketches, left out.
"""

from __future__ import annotations

import importlib
import re
import shlex

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = ("", "sh", "bash", "shell", "console")
# How a documented command is spelled -> the command module whose parser reads its arguments.
SCRIPT = re.compile(r"^(?:\.venv/bin/)?(?:python3? )?(?:\S*/)?scripts/(\w+)\.(?:py|sh)$")
CONSOLE = re.compile(r"^chestdet-([\w-]+)$")
SHELL_ALIASES = {"train": "train", "export": "export", "crossval": "crossval"}
COMMAND_LINE = re.compile(r"(^|[\s;&|])(\S*scripts/\w+\.(py|sh)|chestdet-[\w-]+|-m chestdet\.commands\.)")


def shell_blocks(text: str) -> list[str]:
    blocks, inside, fence, lines = [], False, "", []
    for line in text.splitlines():
        marker = re.match(r"^\s*```(\w*)\s*$", line)
        if marker and not inside:
            inside, fence, lines = True, marker.group(1), []
        elif marker and inside:
            inside = False
            if fence in SHELL_FENCES:
                blocks.append("\n".join(lines))
        elif inside:
            lines.append(line)
    return blocks


def commands_of(block: str) -> list[list[str]]:
    """Each simple command of a block (continued lines joined; `&&`, `;` and `|` split; comments and
    leading VAR=value assignments dropped)."""
    found = []
    for line in re.sub(r"<[^>]*>", "PLACEHOLDER", re.sub(r"\\\n\s*", " ", block)).splitlines():
        if "..." in line or not COMMAND_LINE.search(line):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]
                found += [words] if words else []
                words = []
            else:
                words.append(token)
    return found


def command_module(words: list[str]) -> tuple[str, list[str]] | None:
    head = words[0] if not words[0].endswith("python") and words[0] not in ("python3",) else " ".join(words[:2])
    rest = words[1:] if head == words[0] else words[2:]
    if (words[0].endswith("python") or words[0] == "python3") and len(words) > 2 and words[1] == "-m":
        name = words[2]
        return (name, words[3:]) if name.startswith("chestdet.commands.") else None
    script = SCRIPT.match(head)
    if script:
        return f"chestdet.commands.{script.group(1)}", rest
    console = CONSOLE.match(words[0])
    if console:
        return f"chestdet.commands.{console.group(1).replace('-', '_')}", words[1:]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for block in shell_blocks(doc.read_text(encoding="utf-8")):
            for words in commands_of(block):
                parsed = command_module(words)
                if parsed is not None:
                    found.append((f"{doc.relative_to(REPO)}: {' '.join(words)}", *parsed))
    return found


# Paths starting with these are the repository's own (they must exist); any other path is the user's
# (their data, the pipeline's outputs under workspace/) and is not looked for.
REPOSITORY_ROOTS = ("chestdet/", "scripts/", "pipelines/", "docs/", "tests/", "tools/", "benchmarks/",
                    "workspace/sample/", "label_map.pbtxt", "predefined_classes.txt", "label_studio_config.xml")


def repository_paths(argv: list[str]) -> list[str]:
    values = [value.split("=", 1)[1] if value.startswith("--") and "=" in value else value for value in argv]
    return [value for value in values if value.startswith(REPOSITORY_ROOTS)]


def parse(module: str, argv: list[str]) -> None:
    """What the command's main does with argv before any work: crossval.sh passes what it does not know to
    train.sh's parser."""
    parser = importlib.import_module(module).build_parser()
    if module != "chestdet.commands.crossval":
        parser.parse_args(argv)
        return
    _, rest = parser.parse_known_args(argv)
    importlib.import_module("chestdet.commands.train").build_parser().parse_args(["--records", "r", *rest])


COMMANDS = documented_commands()


def test_the_docs_document_the_main_commands():
    modules = {module for _, module, _ in COMMANDS}
    for stage in ("generate_tfrecords", "train", "export", "detect", "evaluate"):
        assert f"chestdet.commands.{stage}" in modules


@pytest.mark.parametrize("where, module, argv", COMMANDS, ids=[where[:90] for where, _, _ in COMMANDS])
def test_each_documented_command_parses_and_names_existing_files(where: str, module: str, argv: list[str]):
    try:
        parse(module, argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: the parser refuses it (exit {exit_.code})")
    missing = [path for path in repository_paths(argv) if not (REPO / path).exists()]
    assert missing == [], f"{where}: no such file in the repository: {missing}"


def test_the_checks_catch_an_unknown_flag_and_a_missing_file():
    [(where, module, argv)] = [(w, m, a) for w, m, a in documented_commands_of(
        "```\npython scripts/detect.py --model workspace/x --input workspace/y --no-such-flag\n"
        "scripts/export.sh --config pipelines/missing.config --checkpoint workspace/runs/a/best.json\n```\n")
        if m.endswith("detect")]
    with pytest.raises(SystemExit):
        importlib.import_module(module).build_parser().parse_args(argv)
    assert repository_paths(["--config", "pipelines/missing.config"]) == ["pipelines/missing.config"]


def documented_commands_of(text: str) -> list[tuple[str, str, list[str]]]:
    return [("text", *command_module(words)) for block in shell_blocks(text) for words in commands_of(block)
            if command_module(words) is not None]


def test_every_documented_make_target_exists():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    documented = {words[1] for doc in DOCS for block in shell_blocks(doc.read_text(encoding="utf-8"))
                  for words in (line.split() for line in block.splitlines())
                  if len(words) >= 2 and words[0] == "make"}
    assert {"demo", "test"} <= documented
    assert documented - targets == set()
