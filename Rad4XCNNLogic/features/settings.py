"""The settings of the features part: the backbones (``models``), their fine-tuning (``training``), deep
feature extraction (``deep``) and radiomics (``radiomics``), with the vocabularies their rules use (devices,
compute types, radiomics presets, the words of ``weights``). Light: no numpy, torch or PyRadiomics, so the
command line's help and the Slicer panel read these rules without loading the computation.
"""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.features.volume_nets import VOLUME_NETS
from Rad4XCNNLogic.infra.interval import Interval
from Rad4XCNNLogic.infra.settings import UNIT_OPEN, option

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: The radiomics presets, by name: their PyRadiomics parameter files (in ``features/data``).
PRESETS = {
    "paper": "radiomics_paper.yaml",
    "paper3d": "radiomics_paper3d.yaml",
    "extended": "radiomics_extended.yaml",
}
#: The 3D counterpart of a 2D preset, used when a cohort of volumes is given the 2D one.
PRESETS_3D = {"paper": "paper3d"}

#: The words of a backbone's ``weights`` (anything else is a checkpoint or state-dict file).
IMAGENET = "imagenet"
TRAINED = "trained"
#: The words that mean "no weights: random initialisation from the seed".
RANDOM_WORDS = ("none", "null", "random")
WEIGHT_KINDS = ("random", IMAGENET, TRAINED, "file")
#: The planes of a volume's 2D slices for 2.5D deep features (``deep.planes``).
PLANES = ("axial", "triplanar")


def weights_kind(weights: str | None) -> str:
    """What a ``weights`` value names: ``random``, ``imagenet``, ``trained`` or ``file``.

    The one reading of the setting: the configuration, the stage commands' ``--weights`` and the Slicer
    panel all go through it.

    >>> [weights_kind(w) for w in (None, "None", "ImageNet", "trained", "runs/a/resnet50.pt")]
    ['random', 'random', 'imagenet', 'trained', 'file']
    """
    if weights is None:
        return "random"
    text = str(weights).strip()
    word = text.lower()
    if not text or word in RANDOM_WORDS:
        return "random"
    if word in (IMAGENET, TRAINED):
        return word
    return "file"


def normalise_weights(weights: str | None) -> str | None:
    """A ``weights`` value in its one spelling: None (random), ``imagenet``, ``trained`` or the file as given.

    >>> normalise_weights("none"), normalise_weights(" ImageNet "), normalise_weights("ckpt/a.pt")
    (None, 'imagenet', 'ckpt/a.pt')
    """
    kind = weights_kind(weights)
    if kind == "random":
        return None
    return kind if kind != "file" else str(weights).strip()


def check_device_name(device: str) -> str | None:
    """What is wrong with a device name (None when it is one of :data:`DEVICES` or ``cuda:N``); whether the
    device exists on this machine is :func:`~Rad4XCNNLogic.features.backbones.resolve_device`'s question.

    Examples
    --------
    >>> check_device_name("cuda:1") is None, check_device_name("gpu")
    (True, "unknown device 'gpu'; expected one of auto, cpu, cuda, mps (or cuda:N)")
    """
    text = str(device).strip().lower()
    kind, _, number = text.partition(":")
    if kind in DEVICES and (not number or (kind == "cuda" and number.isdigit())):
        return None
    return f"unknown device {device!r}; expected one of {', '.join(DEVICES)} (or cuda:N)"


@dataclass
class ModelConfig:
    """One backbone whose deep features are explained."""

    name: str = option(
        "resnet50",
        "timm model name (resnet50, densenet121, vit_base_patch16_224, ...), or for volumes a native 3D "
        f"network: {', '.join(VOLUME_NETS)} (needs rad4xcnn[volumes3d])",
    )
    weights: str | None = option(
        None,
        "null: random initialisation from the seed; 'imagenet': timm's pretrained weights (online); "
        "'trained': fine-tuned on the cohort by the training stage; or a path to a checkpoint file",
        normalise=normalise_weights,
    )
    label: str | None = option(
        None,
        "name of this backbone's features and files (null: the model name); lets one architecture appear "
        "twice, e.g. fine-tuned and randomly initialised",
    )
    stage: int | None = option(
        None,
        "take the pooled output of this intermediate CNN stage instead of the "
        "pre-logits features (null: pre-logits)",
        minimum=0,
    )
    layers: list[str] = option(
        [],
        "pool these layers instead, side by side, as columns <model>.<layer>_<index> (timm's feature_info "
        "modules, e.g. layer2, layer4 or blocks.11 (the CLS token), and pre_logits); empty: pre-logits only",
    )

    @property
    def key(self) -> str:
        """The name of this backbone's features, checkpoint and files: its label, else the model name."""
        return self.label or self.name

    @property
    def weights_kind(self) -> str:
        """``random``, ``imagenet``, ``trained`` or ``file`` (see :func:`weights_kind`)."""
        return weights_kind(self.weights)


@dataclass
class TrainingConfig:
    """Fine-tuning of every backbone whose ``weights`` is ``trained`` (the paper fine-tunes its CNNs)."""

    pretrained: bool = option(
        True,
        "start from ImageNet weights (needs network access or timm's cache); a 3D network has none and "
        "starts from random weights",
    )
    epochs: int = option(30, "maximum number of epochs", minimum=1)
    batch_size: int = option(32, "training batch size (at least 2, for batch normalisation)", minimum=2)
    learning_rate: float = option(3e-4, "AdamW learning rate", minimum=0)
    patience: int = option(8, "early stopping: epochs without a better validation AUC", minimum=1)
    input_size: int | None = option(
        None, "model input size in pixels (null: the model's default)", minimum=16
    )
    augment: bool = option(True, "ultrasound data augmentation (flips, small affine, gain, speckle, blur)")
    val_fraction: float = option(
        0.15,
        "share of the train cases held out for validation when the cohort has no val split",
        interval=UNIT_OPEN,
    )
    phases: list[str] = option(
        [],
        "the network's training phases in order, by cohort of the manifest, each fitting on the cohort's "
        "train split and early-stopping on its val split; e.g. [busi, palermo]: the paper's protocol "
        "(empty: one phase on split.train_cohort). Cases used here may not be evaluated: the run stops",
    )
    finetune_manifest: str | None = option(
        None,
        "a second phase on another manifest's train split (older form of 'phases'); its images go "
        "through the same leakage check against the evaluation sets",
    )
    dtype: str = option(
        "auto",
        "compute type of training (auto: bfloat16 autocast on CUDA, float32 elsewhere); the deep features "
        "are extracted afterwards in deep.dtype",
        choices=DTYPES,
    )


@dataclass
class DeepConfig:
    """Deep feature extraction."""

    batch_size: int = option(32, "images per forward pass", minimum=1)
    margin: float = option(
        0.1, "ROI margin around the lesion, as a fraction of its longer side", interval=Interval(0, 5)
    )
    dtype: str = option(
        "float32",
        "compute type of the forward pass; float32 gives the same features on every device; bfloat16 "
        "(auto: bfloat16 on CUDA) is faster on a GPU but keeps about 3 significant digits, adds rank ties "
        "and makes rho depend on the device",
        choices=DTYPES,
    )
    input_size: int | None = option(
        None, "model input size in pixels (null: the model's or checkpoint's)", minimum=16
    )
    num_workers: int | None = option(None, "image-decoding worker processes (null: automatic)", minimum=0)
    planes: str = option(
        "axial",
        "volumes (2.5D): the lesion's slices through the 2D network: axial, or triplanar (axial, coronal "
        "and sagittal slices through the lesion)",
        choices=PLANES,
    )
    max_slices: int = option(
        16, "volumes (2.5D): at most this many lesion slices per plane, spread evenly", minimum=1
    )


#: The section's defaults, which the extraction's keyword defaults are.
DEEP = DeepConfig()


@dataclass
class RadiomicsConfig:
    """Radiomic features with PyRadiomics."""

    params: str = option(
        "paper",
        f"a preset ({', '.join(PRESETS)}; paper: the 474 features of shape2D, original and 4 wavelet "
        "sub-bands; paper3d: the same families on volumes, 3D shape and 8 wavelet sub-bands, taken for a "
        "cohort of volumes when paper is named; extended: adds LoG and other filters) or a path to a "
        "PyRadiomics YAML file",
    )
    resample_spacing: list[float] | None = option(
        None,
        "resample every image and mask to this spacing in mm before extraction, [x, y] or [x, y, z] "
        "(PyRadiomics' resampledPixelSpacing; null: the parameter file's, none in the presets)",
        interval=Interval(0, low_open=True),
    )
    jobs: int | None = option(None, "worker processes (null: all cores)", minimum=1)
    scheduler: str | None = option(None, "address of a Dask scheduler to run the cases on (null: local)")
