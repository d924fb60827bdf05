"""The settings of the cam part: the saliency maps of a gallery of cases, with the vocabularies their rules
use (the CAM methods' names and spellings, the randomisation tests). Light: no numpy, torch or
pytorch-grad-cam, so the command line's help and the Slicer panel read these rules without loading them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.infra.settings import option

#: The CAM methods, by their name here (their implementations: :data:`Rad4XCNNLogic.cam.methods.METHODS`).
METHOD_NAMES = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "layercam",
    "eigencam",
    "eigengradcam",
    "scorecam",
)
DEFAULT_METHODS = ("gradcam", "eigencam", "scorecam")
#: Other spellings of a method (after case, spaces, ``-`` and ``_`` are dropped).
ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}
#: How far the randomisation test goes: every cascade step (top layers first, then all), only the fully
#: randomised model, or no test.
RANDOMISATIONS = ("cascade", "all", "none")
#: Deletion and insertion curves are sampled at this many removal fractions (plus 0).
DEFAULT_STEPS = 16
#: The kernel radius in pixels: each pixel's value is the feature of the (2r+1) x (2r+1) square around it,
#: restricted to lesion pixels (PyRadiomics' ``kernelRadius`` with ``maskedKernel``). 2 gives 5 x 5 = 25
#: pixels, the smallest window in which a 32-bin texture matrix is not mostly empty; larger kernels give
#: smoother maps and cost about (2r+1)^2 per pixel.
DEFAULT_KERNEL_RADIUS = 2


def method_name(raw: str) -> str:
    """The canonical spelling of one method name: case, spaces, ``-`` and ``_`` are ignored and the aliases
    resolved (``Grad-CAM`` is ``gradcam``; ``gradcampp`` is ``gradcam++``); an unknown name comes back as
    typed, for the caller's check to refuse.

    >>> method_name("Grad-CAM"), method_name("GradCAM_PP"), method_name("score cam")
    ('gradcam', 'gradcam++', 'scorecam')
    """
    key = re.sub(r"[\s_\-]", "", str(raw).lower())
    return ALIASES.get(key, key)


def check_methods(methods: str | Sequence[str], known: Iterable[str] = METHOD_NAMES) -> list[str]:
    """Validate CAM method names (a list, or one comma-separated string) and return them canonical
    (see :func:`method_name`); duplicates are dropped, the order is kept. ``known``: the methods accepted.

    Examples
    --------
    >>> check_methods("Grad-CAM, eigencam,score_cam")
    ['gradcam', 'eigencam', 'scorecam']
    """
    known = list(known)
    if isinstance(methods, str):
        methods = methods.split(",")
    names: list[str] = []
    for raw in methods:
        key = method_name(raw)
        if not key:
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise Rad4XCNNError(
                f"unknown CAM method {str(raw).strip()!r}{hint}; known methods: {', '.join(known)}"
            )
        if key not in names:
            names.append(key)
    if not names:
        raise Rad4XCNNError(f"no CAM method given; known methods: {', '.join(known)}")
    return names


@dataclass
class CamConfig:
    """Saliency maps for a gallery of cases (needs a model with a classifier head)."""

    enabled: bool = option(True, "compute CAMs (needs a fine-tuned backbone or a rad4xcnn checkpoint)")
    model: str | None = option(
        None, "the backbone whose CAMs are shown (null: the first one with a classifier)"
    )
    methods: list[str] = option(
        list(DEFAULT_METHODS),
        "CAM methods (Grad-CAM, gradcam_pp and other spellings are read as the names here)",
        choices=METHOD_NAMES,
        normalise=method_name,
    )
    gallery: int = option(6, "number of test cases in the gallery (half per class where possible)", minimum=0)
    cases: list[str] = option([], "explicit case ids for the gallery (overrides 'gallery')")
    batch_size: int = option(32, "ScoreCAM batch size (it runs one forward pass per channel)", minimum=1)
    target_layer: str | None = option(
        None,
        "dotted module name, e.g. layer4.1 (null: layer4[-1] for ResNets, features.norm5 for DenseNets, "
        "blocks[-1].norm1 for ViTs)",
    )
    target_class: str | None = option(None, "the class explained, by name (null: each case's prediction)")
    tolerance: float = option(0.0, "pointing game: pixels around the lesion that count", minimum=0)
    faithfulness: bool = option(
        True,
        "measure each map's faithfulness: ROAD (most/least relevant first), deletion and insertion AUC, each "
        "against a random map and the map shuffled within the lesion (a method must beat both)",
    )
    deletion_steps: int = option(
        DEFAULT_STEPS, "removal steps of the deletion and insertion curves", minimum=1
    )
    randomisation: str = option(
        "all",
        "model-randomisation test: all (every weight random: one more map per method), cascade (top layers "
        "first, then all: about 7-10 maps per method; ScoreCAM's cost times that) or none",
        choices=RANDOMISATIONS,
    )
