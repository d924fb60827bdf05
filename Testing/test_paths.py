"""Paths as users type them: every command takes relative and absolute paths, from any working directory.

Relative paths on the command line are taken from the working directory; relative paths inside a
configuration file from the file's folder; paths inside a manifest from the manifest's folder. The folders
here hold spaces and non-ASCII letters, and each command runs once with relative paths from inside the run
folder and once with absolute paths from an unrelated folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from Rad4XCNNLogic.cli import main
from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort
from Rad4XCNNLogic.run.config import absolute_paths, load_config

#: Small budgets: the paths are under test here, not the statistics.
TINY = {
    "device": "cpu",
    "training": {"pretrained": False, "epochs": 1, "batch_size": 8, "input_size": 48, "patience": 1},
    "models": [{"name": "resnet18", "weights": "trained"}],
    "deep": {"input_size": 48},
    "radiomics": {"jobs": 1},
    "explain": {"thresholds": [0.3], "permutations": 20, "bootstrap": 5, "fdr": None, "stratify": []},
    "classification": {"classifiers": ["rf"], "cv_folds": 2, "n_bootstrap": 10},
    "cam": {"methods": ["gradcam"], "gallery": 1, "faithfulness": False, "randomisation": "none"},
}


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    """A cohort, a configuration file and a run folder in three folders named with spaces and umlauts;
    the configuration names the cohort and the run folder relative to its own folder."""
    root = tmp_path_factory.mktemp("paths")
    manifest = make_synthetic_cohort(root / "dätä set" / "cohört", n=14, n_external=4, seed=5, shape=(64, 80))
    config_dir = root / "cönfig files"
    config_dir.mkdir()
    run = root / "rüns x" / "run one"
    config = config_dir / "tiny run.yaml"
    settings = {**TINY, "manifest": _rel(manifest, config_dir), "out": _rel(run, config_dir)}
    config.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    elsewhere = root / "élsewhere"
    elsewhere.mkdir()
    return {"root": root, "manifest": manifest, "config": config, "run": run, "elsewhere": elsewhere}


@pytest.fixture(scope="module")
def run_folder(layout) -> Path:
    """``rad4xcnn run CONFIG`` with CONFIG given relative to a working directory outside every folder."""
    cwd = Path.cwd()
    os.chdir(layout["elsewhere"])
    try:
        code = main(["-q", "run", _rel(layout["config"], layout["elsewhere"]), "--no-progress"])
    finally:
        os.chdir(cwd)
    assert code == 0
    return layout["run"]


def _statuses(run: Path) -> dict[str, str]:
    stages = json.loads((run / "run.json").read_text(encoding="utf-8"))["stages"]
    return {name: stage["status"] for name, stage in stages.items()}


def test_a_configuration_files_paths_are_relative_to_its_folder(run_folder):
    assert (run_folder / "report.html").is_file()
    assert set(_statuses(run_folder).values()) == {"computed"}
    recorded = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))["config"]
    assert Path(recorded["manifest"]).is_absolute() and Path(recorded["out"]) == run_folder


def test_a_relative_run_rerun_from_another_folder_finds_its_cache(layout, run_folder, monkeypatch):
    monkeypatch.chdir(run_folder)  # inside the run folder: the configuration is now ../../cönfig files/...
    assert main(["-q", "run", _rel(layout["config"], run_folder), "--no-progress"]) == 0
    assert set(_statuses(run_folder).values()) == {"cached"}
    # the same run named by absolute paths on the command line, from yet another folder
    monkeypatch.chdir(layout["root"])
    argv = ["-q", "run", str(layout["config"]), "--manifest", str(layout["manifest"])]
    assert main([*argv, "--out", str(run_folder), "--no-progress"]) == 0
    assert set(_statuses(run_folder).values()) == {"cached"}


def test_flags_are_relative_to_the_working_directory_and_file_entries_to_the_file(layout, monkeypatch):
    monkeypatch.chdir(layout["elsewhere"])
    cfg = load_config(layout["config"], {"out": "mine/run"})
    assert Path(cfg.out) == layout["elsewhere"] / "mine" / "run"
    assert Path(cfg.manifest) == layout["manifest"]
    cfg = load_config(layout["config"], {"models": [{"name": "resnet18", "weights": "ckpt dir/m.pt"}]})
    assert Path(cfg.models[0].weights) == layout["elsewhere"] / "ckpt dir" / "m.pt"


def test_absolute_paths_leaves_words_and_absolute_paths_alone(tmp_path):
    data = {
        "manifest": "/data/m.csv",
        "out": "~/runs/x",
        "radiomics": {"params": "paper"},
        "training": {"finetune_manifest": "site2.csv"},
        "models": [{"name": "a", "weights": "imagenet"}, {"name": "b", "weights": "w.pt"}, {"name": "c"}],
    }
    out = absolute_paths(data, tmp_path)
    assert out["manifest"] == "/data/m.csv"
    assert out["out"] == str(Path.home() / "runs" / "x")
    assert out["radiomics"]["params"] == "paper"
    assert out["training"]["finetune_manifest"] == str(tmp_path / "site2.csv")
    assert [m.get("weights") for m in out["models"]] == ["imagenet", str(tmp_path / "w.pt"), None]
    assert data["models"][1]["weights"] == "w.pt"  # the input is not changed


def _stage_commands(run: Path, out: Path, name) -> list[list[str]]:
    """Every stage command on the run's files; ``name(path)`` writes a path as the case under test does."""
    bad_case = json.loads((run / "run.json").read_text(encoding="utf-8"))["stages"]["cam"]["summary"]["cases"]
    m = name(run / "cohort.csv")
    ckpt = name(run / "models" / "resnet18.pt")
    deep, rad = name(run / "deep_features.csv"), name(run / "radiomics.csv")
    return [
        ["cohort", m, "--write", name(out / "frozen.csv")],
        ["synth", "--n", "4", "--shape", "64x80", "--out", name(out / "synth")],
        ["train", "--manifest", m, "--model", "resnet18", "--epochs", "1", "--input-size", "32",
         "--no-augment", "--device", "cpu", "--out", name(out / "model.pt")],
        ["deep", "--manifest", m, "--weights", ckpt, "--input-size", "48", "--device", "cpu",
         "--cache", name(out / "deep cache"), "--out", name(out / "deep_features.csv")],
        ["radiomics", "--manifest", m, "--jobs", "1", "--cache-dir", name(out / "rad cache"),
         "--out", name(out / "radiomics.csv")],
        ["explain", "--deep", deep, "--radiomics", rad, "-M", "0.6", "--permutations", "20", "--bootstrap",
         "5", "--manifest", m, "--cohorts", m, "--importances", name(run / "importances.csv"),
         "--out", name(out / "explain")],
        ["classify", "--features", f"learnt={deep}", rad, "--manifest", m, "--explained",
         name(run / "explanations.csv"), "--classifiers", "rf", "--cv-folds", "2", "--bootstrap", "5",
         "--out", name(out / "classify")],
        ["probe", "--deep", deep, "--radiomics", rad, "--manifest", m, "--folds", "2", "--bootstrap", "5",
         "--permutations", "20", "--checkpoint", ckpt, "--concepts", "1", "--random-directions", "2",
         "--out", name(out / "probe")],
        ["cam", "--manifest", m, "--weights", ckpt, "--methods", "gradcam", "--cases", bad_case[0],
         "--no-faithfulness", "--randomisation", "none", "--device", "cpu", "--out", name(out / "cam")],
        ["featuremaps", "--manifest", m, "--cases", bad_case[0], "--features", "original_firstorder_Mean",
         "--cams", name(run / "cam"), "--out", name(out / "maps")],
        ["featuremaps", "--manifest", m, "--cases", bad_case[0], "--from-run", name(run), "--top", "3",
         "--out", name(out / "maps from run")],
    ]  # fmt: skip


#: What each stage command writes, relative to its --out (a file --out is the file itself).
WRITES = {
    "cohort": "",
    "synth": "manifest.csv",
    "train": "",
    "deep": "",
    "radiomics": "",
    "explain": "explanations.csv",
    "classify": "classification.csv",
    "probe": "probes.csv",
    "cam": "cam",
    "featuremaps": "",
}


#: Stage commands whose own work (fine-tuning, a network's forward passes) is most of the test's time: run
#: with relative paths only, since their file flags are made by the same code as those of explain,
#: classify, radiomics and cam (cli/stagecmd.py), which run with absolute paths too.
HEAVY = ("train", "deep")


@pytest.mark.parametrize("mode", ["relative, inside the run folder", "absolute, from elsewhere"])
def test_every_stage_command_takes_relative_and_absolute_paths(layout, run_folder, mode, monkeypatch):
    relative = mode.startswith("relative")
    cwd = run_folder if relative else layout["elsewhere"]
    out = layout["root"] / f"commands ñ {'rel' if relative else 'abs'}"
    monkeypatch.chdir(cwd)

    def name(path: Path) -> str:
        return _rel(path, cwd) if relative else str(path)

    commands = _stage_commands(run_folder, out, name)
    for argv in commands if relative else [c for c in commands if c[0] not in HEAVY]:
        assert main(["-q", *argv]) == 0, argv
        target = Path(argv[argv.index("--out") + 1] if "--out" in argv else argv[argv.index("--write") + 1])
        target = (cwd / target) / WRITES[argv[0]]
        assert target.exists(), (argv[0], target)
    # nothing was written into the working directory under a doubled or misplaced relative path
    assert not (cwd / out.name).exists() or cwd == out.parent


def test_case_command_takes_a_relative_run_folder(layout, run_folder, monkeypatch):
    monkeypatch.chdir(run_folder.parent)
    one = layout["root"] / "one case"
    one.mkdir(exist_ok=True)
    cohort = (run_folder / "cohort.csv").read_text(encoding="utf-8").splitlines()
    # a one-case manifest in another folder: its image paths are relative to *its* folder
    header, row = cohort[0], cohort[1]
    manifest_dir = Path(load_config(layout["config"]).manifest).parent
    cols = header.split(",")
    values = row.split(",")
    for col in ("image", "mask"):
        i = cols.index(col)
        values[i] = _rel(manifest_dir / values[i], one) if not Path(values[i]).is_absolute() else values[i]
    (one / "case.csv").write_text(f"{header}\n{','.join(values)}\n", encoding="utf-8")
    argv = ["-q", "case", "--manifest", _rel(one / "case.csv", run_folder.parent), "--run", run_folder.name,
            "--weights", _rel(run_folder / "models" / "resnet18.pt", run_folder.parent), "--cam", "gradcam",
            "--features", "original_firstorder_Mean", "--out", "case out"]  # fmt: skip
    assert main(argv) == 0
    assert any((run_folder.parent / "case out").iterdir())


def test_demo_with_a_relative_folder(tmp_path, monkeypatch, capsys):
    """``rad4xcnn demo --out REL`` (the README's first command) with the demo's own paths, budgets cut."""
    import Rad4XCNNLogic.run.runner as runner

    original = runner.demo_config

    def small(out, manifest, seed=0):
        cfg = original(out, manifest, seed)
        cfg.training.epochs, cfg.training.input_size, cfg.deep.input_size = 1, 48, 48
        cfg.explain.permutations, cfg.explain.bootstrap = 20, 5
        cfg.classification.classifiers, cfg.classification.n_bootstrap = ["rf"], 10
        cfg.cam.methods, cfg.cam.gallery, cfg.cam.faithfulness = ["gradcam"], 1, False
        cfg.cam.randomisation = "none"
        return cfg

    monkeypatch.setattr(runner, "demo_config", small)
    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--out", "my démo", "--n", "16", "--external", "4", "--no-progress"]
    assert main(argv) == 0
    report = tmp_path / "my démo" / "run" / "report.html"
    assert report.is_file()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"open {os.path.join('my démo', 'run', 'report.html')}"
    assert main(argv) == 0
    assert set(_statuses(report.parent).values()) == {"cached"}
