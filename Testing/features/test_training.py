"""Fine-tuning: it learns the synthetic classes, its checkpoint reproduces its features, two phases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from Rad4XCNNLogic.cli import main  # noqa: E402
from Rad4XCNNLogic.cohort.manifest import Cohort, read_manifest  # noqa: E402
from Rad4XCNNLogic.errors import Rad4XCNNError  # noqa: E402
from Rad4XCNNLogic.features.backbones import PreprocessConfig, load_checkpoint  # noqa: E402
from Rad4XCNNLogic.features.deep import extract_deep_features  # noqa: E402
from Rad4XCNNLogic.features.preprocessing import grey_input, preprocess_case  # noqa: E402
from Rad4XCNNLogic.features.settings import TrainingConfig  # noqa: E402
from Rad4XCNNLogic.features.training import UltrasoundAugmentation, roc_auc, train_model  # noqa: E402
from Rad4XCNNLogic.infra.storage import file_sha256  # noqa: E402

FAST = {"device": "cpu", "progress": False}


def fast(**settings) -> TrainingConfig:
    """A small training section: random start (no network), small inputs, a few epochs."""
    base = {"pretrained": False, "input_size": 64, "batch_size": 16, "learning_rate": 1e-3, "epochs": 1}
    return TrainingConfig(**{**base, **settings})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Cohort:
    """72 internal cases (48 train, 24 val) and 16 external ones (10 train, 6 val, for a second phase)."""
    from Rad4XCNNLogic.cohort.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("train")
    cohort = read_manifest(make_synthetic_cohort(out, n=72, n_external=16, seed=5, shape=(96, 128)))
    internal = [c for c in cohort.cases if c.cohort == "internal"]
    external = [c for c in cohort.cases if c.cohort == "external"]
    cases = [replace(c, split="train" if i < 48 else "val") for i, c in enumerate(internal)]
    cases += [replace(c, split="train" if i < 10 else "val") for i, c in enumerate(external)]
    return Cohort(cases, [], cohort.source)


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "model.pt"
    return train_model(cohort, "resnet18", fast(epochs=4), out=out, train_cohort="internal", **FAST)


def test_fine_tuning_reaches_a_validation_auc_clearly_above_chance(trained):
    assert trained.best_val_auc >= 0.85
    assert trained.class_names == ["benign", "malignant"]
    assert 1 <= trained.best_epoch <= len(trained.history) <= 4
    assert trained.best_val_auc == max(h["val_auc"] for h in trained.history)
    assert {"epoch", "train_loss", "val_loss", "val_auc", "lr"} <= set(trained.history[0])
    assert trained.settings["train_cases"] == 48 and trained.settings["val_cases"] == 24
    assert trained.settings["base_weights"]["random_init"] is True
    assert trained.history[-1]["lr"] < 1e-3  # the cosine schedule has decayed the rate


def test_checkpoint_loads_safely_and_reproduces_features(trained, cohort):
    raw = torch.load(trained.checkpoint, weights_only=True)
    assert raw["format"] == "rad4xcnn-checkpoint" and raw["model_name"] == "resnet18"
    best = {"name": "val_auc", "value": trained.best_val_auc, "epoch": trained.best_epoch}
    assert raw["best_metric"] == best
    assert raw["preprocess"]["input_size"] == 64 and raw["class_names"] == ["benign", "malignant"]
    assert len(raw["history"]) == len(trained.history)

    model, pre, meta = load_checkpoint(trained.checkpoint)
    assert pre == trained.backbone.preprocess and meta["class_names"] == ["benign", "malignant"]
    assert model.get_classifier().out_features == 2
    some = cohort.subset(split="val", cohort="internal").cases[:6]
    in_memory = extract_deep_features(some, trained.backbone, device="cpu", progress=False)
    from_file = extract_deep_features(some, weights=trained.checkpoint, device="cpu", progress=False)
    assert from_file.settings["preprocess"]["input_size"] == 64  # the checkpoint's preprocessing is reused
    assert from_file.settings["weights"]["sha256"] == file_sha256(trained.checkpoint)
    assert np.array_equal(in_memory.features.to_numpy(), from_file.features.to_numpy())
    x, crop = preprocess_case(some[0].load(), pre)  # what the CAM stage does
    with torch.inference_mode():
        torch.testing.assert_close(model(x[None]), trained.backbone.model(x[None]))
    assert crop.side > 0


def test_second_phase_fine_tunes_the_first_checkpoint_on_another_cohort(trained, cohort, tmp_path):
    second = train_model(
        cohort,
        None,
        fast(),
        weights=trained.checkpoint,
        train_cohort="external",
        out=tmp_path / "p2.pt",
        **FAST,
    )
    assert second.settings["model"] == "resnet18"
    assert second.settings["train_cases"] == 10 and second.settings["val_cases"] == 6
    assert second.settings["base_weights"]["sha256"] == file_sha256(trained.checkpoint)
    assert second.class_names == trained.class_names
    _, pre, meta = load_checkpoint(second.checkpoint)
    assert pre.input_size == 64 and meta["training"]["train_cohort"] == "external"


def test_train_command(cohort, tmp_path, capsys):
    from Rad4XCNNLogic.cohort.manifest import write_manifest

    manifest = write_manifest(cohort.subset(cohort="internal"), tmp_path / "m.csv")
    code = main(
        [
            *("-q", "train", "--manifest", str(manifest), "--model", "resnet18", "--epochs", "1"),
            *("--input-size", "48", "--batch-size", "16", "--device", "cpu", "--no-progress"),
            *("--out", str(tmp_path / "cli.pt")),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'cli.pt'}: resnet18 for benign, malignant, best validation AUC" in out
    assert "started from random weights" in out
    assert torch.load(tmp_path / "cli.pt", weights_only=True)["preprocess"]["input_size"] == 48


def test_a_backbone_about_to_be_fine_tuned_is_not_announced_as_untrained(cohort, tmp_path, caplog):
    """The 'random weights ... meaningless to explain' warning is for a backbone used untrained, not for one
    whose random weights are the start of its fine-tuning."""
    from Rad4XCNNLogic.features.backbones import build_backbone

    with caplog.at_level("INFO", logger="Rad4XCNNLogic"):
        train_model(cohort.cases[:24], "resnet18", fast(), out=tmp_path / "t.pt", **FAST)
    assert "has random weights" not in caplog.text
    assert "starts from random weights (seed 0) and is fine-tuned" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="Rad4XCNNLogic"):
        build_backbone("resnet18")  # used as it is: the warning stays
    assert "has random weights" in caplog.text


def test_missing_validation_split_is_carved_from_train(cohort, tmp_path):
    only_train = [replace(c, split="train") for c in cohort.cases if c.cohort == "internal"][:40]
    result = train_model(only_train, "resnet18", fast(val_fraction=0.25), out=tmp_path / "v.pt", **FAST)
    assert result.settings["val_cases"] == 10 and result.settings["train_cases"] == 30


def test_training_bad_input(cohort, tmp_path):
    benign = [c for c in cohort.cases if c.label == "benign"]
    with pytest.raises(Rad4XCNNError, match="training needs at least two classes"):
        train_model(benign, "resnet18", fast(), out=tmp_path / "x.pt", **FAST)
    val_one_class = [c for c in cohort.cases if c.split == "train" or c.label == "benign"]
    with pytest.raises(Rad4XCNNError, match="the validation AUC needs cases of at least two classes"):
        train_model(val_one_class, "resnet18", fast(), out=tmp_path / "x.pt", **FAST)
    with pytest.raises(Rad4XCNNError, match="no case of cohort 'site9'"):
        train_model(cohort, "resnet18", fast(), train_cohort="site9", out=tmp_path / "x.pt", **FAST)
    with pytest.raises(Rad4XCNNError, match="no labelled case in the train split"):
        no_train = [replace(c, split="test") for c in cohort.cases]
        train_model(no_train, "resnet18", fast(), out=tmp_path / "x.pt", **FAST)
    with pytest.raises(Rad4XCNNError, match="unknown model 'resnet1B'"):
        train_model(cohort, "resnet1B", fast(), out=tmp_path / "x.pt", **FAST)
    # a section built in Python is checked once against its options' rules, naming the setting
    with pytest.raises(Rad4XCNNError, match=r"training\.batch_size"):
        train_model(cohort, "resnet18", fast(batch_size=1), out=tmp_path / "x.pt", **FAST)
    with pytest.raises(Rad4XCNNError, match=r"training\.val_fraction"):
        train_model(cohort, "resnet18", fast(val_fraction=1.0), out=tmp_path / "x.pt", **FAST)
    assert not (tmp_path / "x.pt").exists()


def test_augmentation_is_seeded_plausible_and_off_when_asked(cohort):
    loaded = cohort.cases[0].load()
    config = PreprocessConfig.for_model("resnet18", input_size=64)
    aug = UltrasoundAugmentation()
    a = aug(loaded, config, np.random.default_rng(1))
    b = aug(loaded, config, np.random.default_rng(1))
    c = aug(loaded, config, np.random.default_rng(2))
    assert a.shape == (64, 64) and a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    plain, _ = grey_input(loaded, config)
    off = UltrasoundAugmentation(0.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0), 0.0, 0.0, 0.0)
    same = off(loaded, config, np.random.default_rng(0))
    assert np.corrcoef(same.ravel(), plain.ravel())[0, 1] > 0.97  # the same view, resampled once more
    flipped = UltrasoundAugmentation(1.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0), 0.0, 0.0, 0.0)
    mirror = flipped(loaded, config, np.random.default_rng(0))
    assert np.corrcoef(mirror.ravel(), plain[:, ::-1].ravel())[0, 1] > 0.97  # left-right, never up-down


def test_roc_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = np.round(rng.random(50), 1)  # ties
    proba = np.stack([1 - p, p], axis=1)
    assert roc_auc(y, proba) == pytest.approx(metrics.roc_auc_score(y, p))
    y3 = rng.integers(0, 3, 60)
    p3 = rng.dirichlet(np.ones(3), 60)
    assert roc_auc(y3, p3) == pytest.approx(metrics.roc_auc_score(y3, p3, multi_class="ovr"))
    assert np.isnan(roc_auc([1, 1], np.array([[0.2, 0.8], [0.4, 0.6]])))


def test_deep_and_train_commands_run_their_stage_on_the_checkpoint_they_are_given(trained, cohort, tmp_path):
    """``deep --weights CHECKPOINT`` names the checkpoint's model and, as the run's deep stage, extracts its
    random-weights control unless ``--controls none``; ``train --weights CHECKPOINT`` starts from it."""
    import pandas as pd

    from Rad4XCNNLogic.cohort.manifest import write_manifest

    manifest = str(write_manifest(cohort.subset(cohort="internal"), tmp_path / "m.csv"))
    common = ["--manifest", manifest, "--weights", str(trained.checkpoint), "--input-size", "32"]
    common += ["--device", "cpu", "--no-progress"]
    assert main(["-q", "deep", *common, "--out", str(tmp_path / "d.csv")]) == 0
    both = pd.read_csv(tmp_path / "d.csv", index_col=0)
    assert {c.rsplit("_", 1)[0] for c in both.columns} == {"resnet18", "resnet18-random"}
    assert (tmp_path / "d.json").is_file()  # its settings, beside it
    assert main(["-q", "deep", *common, "--controls", "none", "--out", str(tmp_path / "o" / "d.csv")]) == 0
    alone = pd.read_csv(tmp_path / "o" / "d.csv", index_col=0)
    pd.testing.assert_frame_equal(alone, both[alone.columns])
    assert {c.rsplit("_", 1)[0] for c in alone.columns} == {"resnet18"}

    argv = ["-q", "train", *common, "--epochs", "1", "--out", str(tmp_path / "t" / "p2.pt")]
    assert main(argv) == 0
    _, _, meta = load_checkpoint(tmp_path / "t" / "p2.pt")
    assert meta["training"]["base_weights"]["sha256"] == file_sha256(trained.checkpoint)
    assert (tmp_path / "t" / "training_history.csv").is_file()
