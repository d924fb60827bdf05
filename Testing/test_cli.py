"""The command line: fast help without heavy imports, synth, cohort, demo, and one-line errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_manifest_rows

import Rad4XCNNLogic
from Rad4XCNNLogic.cli import main

ENGINE = Path(Rad4XCNNLogic.__file__).parent


#: Libraries that no help text and no settings module may load: the rules are read without them.
HEAVY = ("numpy", "pandas", "scipy", "yaml", "torch", "radiomics", "xgboost", "timm", "sklearn", "matplotlib")


def _help_of(*argv: str) -> str:
    return f"from Rad4XCNNLogic.cli import main\ntry:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass"


def _loaded_heavy(code: str) -> tuple[str, list[str]]:
    """(stdout, the heavy libraries loaded) of ``code`` run in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    text, _, heavy = out.rpartition("HEAVY ")
    return text, ast.literal_eval(heavy)


def _commands() -> list[str]:
    from Rad4XCNNLogic.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices)


def test_help_imports_no_heavy_library():
    out, heavy = _loaded_heavy(_help_of("--help"))
    assert "usage: rad4xcnn" in out
    assert heavy == []


@pytest.mark.parametrize("command", _commands())
def test_each_command_help_imports_no_heavy_library(command):
    out, heavy = _loaded_heavy(_help_of(command, "--help"))
    assert f"usage: rad4xcnn {command}" in out
    assert heavy == [], f"rad4xcnn {command} --help loads {heavy}"


def test_the_settings_modules_are_light():
    """The Slicer panel and the command line read every rule from these without numpy, pandas or PyYAML."""
    modules = sorted(f"Rad4XCNNLogic.{p.parent.name}.settings" for p in ENGINE.glob("*/settings.py"))
    assert len(modules) >= 7
    _, heavy = _loaded_heavy("\n".join(f"import {m}" for m in [*modules, "Rad4XCNNLogic.run.config"]))
    assert heavy == []


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("rad4xcnn") or str(__import__("pathlib").Path(sys.executable).parent / "rad4xcnn")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("rad4xcnn ")


def test_synth_and_cohort_commands(tmp_path, capsys):
    assert (
        main(["synth", "--n", "8", "--external", "2", "--out", str(tmp_path / "s"), "--shape", "96x96"]) == 0
    )
    out = capsys.readouterr().out
    assert "wrote 10 synthetic cases" in out
    manifest = tmp_path / "s" / "manifest.csv"
    written = tmp_path / "with_splits.csv"
    assert main(["cohort", str(manifest), "--check-images", "--write", str(written)]) == 0
    assert "10 cases (10 with a lesion), 0 left out" in capsys.readouterr().out
    assert "train" in written.read_text()


def test_synth_volumes_and_cohort_commands(tmp_path, capsys):
    out = tmp_path / "v"
    argv = [
        "synth",
        "--dims",
        "3",
        "--n",
        "3",
        "--out",
        str(out),
        "--shape",
        "24x24x10",
        "--spacing",
        "1,1,3",
    ]
    assert main(argv) == 0
    assert "3D volumes, voxel spacing 1 x 1 x 3 mm" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "vol0001.nrrd",
        "vol0002.nrrd",
        "vol0003.nrrd",
    ]
    assert main(["cohort", str(out / "manifest.csv"), "--check-images"]) == 0
    assert "near-duplicate images: not checked" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "w"), "--shape", "24x24x10"]) != 0
    assert "are for volumes: add --dims 3" in capsys.readouterr().err


def test_bad_manifest_prints_one_line_without_traceback(tmp_path, make_case):
    row = make_case("a")
    del row["image"]
    manifest = write_manifest_rows(tmp_path / "m.csv", [row])
    proc = subprocess.run(
        [sys.executable, "-m", "Rad4XCNNLogic", "cohort", str(manifest)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "lacks the required column(s) image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_cases_are_listed_and_strict_fails(tmp_path, make_case, capsys):
    good, bad = make_case("good"), make_case("bad", split="holdout")
    manifest = write_manifest_rows(tmp_path / "m.csv", [good, bad])
    assert main(["cohort", str(manifest)]) == 0
    assert "left out: case bad: unknown split 'holdout'" in capsys.readouterr().out
    assert main(["cohort", str(manifest), "--strict"]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synth", "--n", "0", "--out", "x"], "expected a number of at least 1"),
        (["synth", "--out", "x", "--shape", "big"], "expected ROWSxCOLS"),
        (["synth", "--out", "x", "--dims", "3", "--spacing", "1,0,2"], "expected three positive numbers"),
    ],
)
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_none_on_the_command_line_is_not_a_left_out_flag():
    from Rad4XCNNLogic.cli import build_parser
    from Rad4XCNNLogic.cli.options import settings_from_args

    base = ["explain", "--deep", "d.csv", "--radiomics", "r.csv", "--out", "o"]
    given = settings_from_args(build_parser().parse_args([*base, "--fdr", "none", "-M", "0.5"]))
    assert given == {"explain": {"fdr": None, "thresholds": [0.5]}}
    assert settings_from_args(build_parser().parse_args(base)) == {}


def test_demo_dims_3_refuses_an_external_cohort(tmp_path, capsys):
    """The 3D demo (run end to end in Testing/run/test_volumes_run.py) has one cohort."""
    assert main(["demo", "--dims", "3", "--external", "5", "--out", str(tmp_path / "demo3d")]) == 2
    assert "--external is for the 2D demo" in capsys.readouterr().err
