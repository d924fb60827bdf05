"""The run configuration: defaults, validation messages, relative paths and the documented reference."""

from __future__ import annotations

import pytest
import yaml

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.run.config import config_from_dict, load_config, reference_yaml


def test_reference_documents_every_setting_and_round_trips():
    text = reference_yaml()
    data = yaml.safe_load(text)
    assert config_from_dict(data) == config_from_dict({})
    body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= len(body)  # a comment for each setting (and section)
    assert "[allowed: rf, xgb, svm]" in text


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"explain": {"thresold": 0.6}},
            "explain.thresold: unknown key; allowed keys in explain: thresholds",
        ),
        ({"device": "gpu"}, "device: unknown device 'gpu'; expected one of auto, cpu, cuda, mps (or cuda:N)"),
        ({"classification": {"classifiers": ["rf", "knn"]}}, "classification.classifiers[1]: 'knn' is not"),
        ({"explain": {"fdr": 2}}, "explain.fdr: must lie in (0, 1], got 2"),
        ({"seed": "zero"}, "seed: must be a whole number, got 'zero'"),
        ({"training": {"pretrained": "yes"}}, "training.pretrained: must be true or false"),
        (
            {"split": {"fractions": [0.5, 0.5, 0.5]}},
            "split.fractions: must be three fractions adding up to 1",
        ),
        ({"models": [{"name": "resnet50"}, {"name": "resnet50"}]}, "models: each backbone may appear once"),
        ({"models": [{"name": "resnet50", "label": "my net"}]}, "models.label: 'my net' must be letters"),
        ({"cam": {"model": "vgg16"}}, "cam.model: 'vgg16' is not one of the models: resnet50"),
        ({"explain": {"thresholds": [0.6, 1.5]}}, "explain.thresholds[1]: must lie in (0, 1], got 1.5"),
        ({"cam": "yes"}, "cam: must be a mapping of keys to values"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(data, message):
    with pytest.raises(Rad4XCNNError) as exc:
        config_from_dict(data)
    assert message in str(exc.value)
    assert str(exc.value).startswith("configuration: ")


def test_one_architecture_twice_with_labels():
    cfg = config_from_dict(
        {
            "models": [
                {"name": "resnet18", "weights": "trained"},
                {"name": "resnet18", "label": "resnet18-random"},
            ]
        }
    )
    assert [m.label or m.name for m in cfg.models] == ["resnet18", "resnet18-random"]


def test_load_resolves_paths_from_the_file_folder(tmp_path):
    cfg_file = tmp_path / "conf" / "run.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(
        "manifest: data/manifest.csv\nout: runs/a\nmodels:\n  - name: resnet18\n    weights: ckpt/m.pt\n"
        "  - name: densenet121\n    weights: imagenet\nexplain:\n  thresholds: [0.5, 0.7]\n"
    )
    cfg = load_config(cfg_file, {"explain": {"fdr": None}, "seed": 3})
    assert cfg.manifest == str(tmp_path / "conf" / "data" / "manifest.csv")
    assert cfg.out == str(tmp_path / "conf" / "runs" / "a")
    assert cfg.models[0].weights == str(tmp_path / "conf" / "ckpt" / "m.pt")
    assert cfg.models[1].weights == "imagenet"
    assert cfg.explain.thresholds == [0.5, 0.7] and cfg.explain.fdr is None and cfg.seed == 3


def test_bad_files(tmp_path):
    with pytest.raises(Rad4XCNNError, match="configuration file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("explain: [unclosed\n")
    with pytest.raises(Rad4XCNNError, match=r"not valid YAML at line 2"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(Rad4XCNNError, match="must be a mapping"):
        load_config(listy)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(Rad4XCNNError, match="not valid YAML"):
        load_config(unsafe)


def test_the_paper_example_configuration_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "paper.yaml"
    cfg = load_config(example)
    assert [m.name for m in cfg.models] == ["resnet50", "densenet121", "vit_base_patch32_224"]
    assert all(m.weights == "trained" for m in cfg.models)
    # the paper's protocol: two phases by cohort, classifiers on the in-house cohort, external validation
    assert cfg.training.phases == ["busi", "palermo"] and cfg.split.train_cohort == "palermo"
    assert cfg.classification.evaluate_on == ["external"] and cfg.training.finetune_manifest is None
    assert cfg.radiomics.params == "paper" and cfg.classification.classifiers == ["rf", "xgb", "svm"]
    assert len(cfg.explain.thresholds) > 1


def test_trust_defaults_strata_training_cases_controls_and_float32():
    import inspect

    from Rad4XCNNLogic.features.deep import extract_deep_features
    from Rad4XCNNLogic.run.config import ModelConfig

    cfg = config_from_dict({})
    assert cfg.explain.stratify == ["label", "cohort"] and cfg.explain.cases == "train"
    assert cfg.control == "random" and cfg.deep.dtype == "float32" and cfg.training.dtype == "auto"
    assert inspect.signature(extract_deep_features).parameters["dtype"].default == "float32"
    cfg.models = [
        ModelConfig("resnet18", "trained"),
        ModelConfig("densenet121", "imagenet"),
        ModelConfig("vgg11"),
    ]
    assert cfg.controls() == {"resnet18": "resnet18-random", "densenet121": "densenet121-random"}
    added = cfg.deep_models()[3:]
    assert [(m.name, m.key, m.weights) for m in added] == [
        ("resnet18", "resnet18-random", None),
        ("densenet121", "densenet121-random", None),
    ]
    # a random copy already configured is the control; nothing is added
    cfg.models = [ModelConfig("resnet18", "trained"), ModelConfig("resnet18", None, label="r18-init")]
    assert cfg.controls() == {"resnet18": "r18-init"} and len(cfg.deep_models()) == 2
    cfg.control = "none"
    assert cfg.controls() == {} and len(cfg.deep_models()) == 2
    with pytest.raises(Rad4XCNNError, match=r"explain\.cases"):
        config_from_dict({"explain": {"cases": "test"}})
    with pytest.raises(Rad4XCNNError, match="control"):
        config_from_dict({"control": "imagenet"})


def test_a_setting_is_read_in_every_spelling_its_rule_accepts():
    """The CAM methods' other spellings and the words of ``weights`` are read as the names the rules use,
    whichever way the value comes (file, flag or panel all build the configuration this way)."""
    cfg = config_from_dict(
        {
            "cam": {"methods": ["Grad-CAM", "gradcam_pp", "Score CAM"]},
            "models": [
                {"name": "resnet18", "weights": " ImageNet "},
                {"name": "resnet50", "weights": "none"},
            ],
        }
    )
    assert cfg.cam.methods == ["gradcam", "gradcam++", "scorecam"]
    assert [m.weights for m in cfg.models] == ["imagenet", None]
    assert [m.weights_kind for m in cfg.models] == ["imagenet", "random"]
    with pytest.raises(Rad4XCNNError, match=r"cam.methods\[0\]: 'gradcamx' is not allowed"):
        config_from_dict({"cam": {"methods": ["gradcamx"]}})


def test_the_volumes_example_configuration_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "volumes3d.yaml"
    cfg = load_config(example)
    # a preset name is kept as it is (not read as a file beside the configuration)
    assert cfg.radiomics.params == "paper3d" and cfg.radiomics.resample_spacing == [1.0, 1.0, 1.0]
    assert cfg.manifest.endswith("synthetic3d/manifest.csv")
