"""The README agrees with the code it shows: its two commands are what CI runs, every ``rad4xcnn`` command
and flag it shows exists, every repository file it names is there, and the example's models are the ones
it lists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    """Every ``rad4xcnn ...`` line of the README's shell blocks, continuation lines joined, comments cut."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("rad4xcnn "):
                commands.append(shlex.split(line.split(">", 1)[0]))
    return commands


def test_the_first_two_commands_are_make_demo_and_make_test_and_ci_runs_both():
    first = [line.split("#", 1)[0].strip() for line in _blocks("bash")[0].splitlines() if line.strip()]
    assert first == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "make test" in ci and "make demo" in ci
    assert ci.index("make demo") > ci.index("make test")  # the front door after the tests
    assert any("demo_run/run/report.html" in line for line in ci)  # and it checks the report


def test_every_command_and_flag_the_readme_shows_exists():
    from Rad4XCNNLogic.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps sub-parsers here
    commands = _commands()
    assert len(commands) > 20
    for argv in commands:
        name = argv[1]
        assert name in sub.choices, f"README shows 'rad4xcnn {name}', which does not exist"
        known = {flag for action in sub.choices[name]._actions for flag in action.option_strings}
        for word in argv[2:]:
            flag = word.split("=", 1)[0]
            if flag.startswith("-"):
                assert flag in known, f"README shows 'rad4xcnn {name} {flag}', which is not a flag of it"


def test_every_repository_file_the_readme_names_exists():
    folders = "Rad4XCNN|Rad4XCNNLogic|Testing|docs|examples|benchmarks"
    named = set(re.findall(rf"`((?:{folders})/[\w./-]+\.\w+)`", README))
    named |= set(re.findall(r"\]\(((?:docs|examples|benchmarks)/[\w./-]+\.\w+)", README))
    named |= {word for cmd in _commands() for word in cmd if word.startswith(("examples/", "benchmarks/"))}
    assert "examples/paper.yaml" in named and "docs/ARCHITECTURE.md" in named
    missing = sorted(name for name in named if not (ROOT / name.split("::")[0]).exists())
    assert not missing, f"README names files that do not exist: {missing}"


def test_the_example_configuration_uses_the_models_the_readme_lists():
    import yaml

    line = next(line for line in README.splitlines() if line.startswith("rad4xcnn run examples/paper.yaml"))
    listed = re.findall(r"\b(resnet\d+|densenet\d+|vit_\w+)\b", line.split("#", 1)[1])
    config = yaml.safe_load((ROOT / "examples" / "paper.yaml").read_text(encoding="utf-8"))
    assert listed == [model["name"] for model in config["models"]]


@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_targets_the_readme_names_are_phony_and_use_the_venv(target):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^\.PHONY:.*\b{target}\b", makefile, flags=re.M)
    recipe = re.search(rf"^{target}: \$\(STAMP\)\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe and "$(BIN)/" in recipe.group(1)
