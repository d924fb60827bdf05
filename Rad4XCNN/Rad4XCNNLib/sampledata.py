"""Sample data for a first try: synthetic breast-ultrasound cases made in the scene, registered with Slicer's
SampleData module, so that trying the module needs no file and no manifest.

Each case is an image volume (a single slice, 0.1 mm pixels) and its lesion as a segmentation drawn on it,
the image/segmentation pair the Cohort panel's "scene" source and the Case panel read. The images come from
the engine's synthetic cohort generator (numpy and scipy only, which Slicer ships), so nothing is
downloaded. The module registers :data:`SOURCES` with ``SampleData.SampleDataLogic
.registerCustomSampleDataSource(..., customDownloader=...)`` (Modules/Scripted/SampleData/SampleData.py at
v5.10.0), whose button calls the downloader with its source.
"""

from __future__ import annotations

import numpy as np

from Rad4XCNNLib import bridge, masks

#: (name in the SampleData module, number of cases): one case, and a small cohort.
SOURCES = (("Rad4XCNN synthetic case", 1), ("Rad4XCNN synthetic cohort", 12))
SHAPE = (96, 120)
PIXEL_MM = 0.1
LABEL_ATTRIBUTE = "Rad4XCNN.label"


def load_cases(n: int = 1, seed: int = 0, shape: tuple[int, int] = SHAPE) -> list[masks.ScenePair]:
    """Put ``n`` synthetic cases into the scene (alternately benign and malignant, each volume labelled by
    the ``Rad4XCNN.label`` attribute); returns them as the scene's image/segmentation pairs."""
    from Rad4XCNNLogic.cohort.imageio import Image2D
    from Rad4XCNNLogic.cohort.synthetic import synthesize_case

    if n < 1:
        raise ValueError(f"a sample needs at least one case, got {n}")
    rng = np.random.default_rng(seed)
    volumes = []
    for i in range(n):
        label = ("benign", "malignant")[i % 2]
        image, lesion, _ = synthesize_case(rng, label, shape=shape)
        name = f"synthetic {i + 1:02d}" if n > 1 else "synthetic case"
        volume = bridge.volume_node_from_image(Image2D(image, spacing=(PIXEL_MM, PIXEL_MM)), name)
        volume.SetAttribute(LABEL_ATTRIBUTE, label)
        masks.segmentation_from_mask(lesion, volume, f"{name} segmentation")
        volumes.append(volume)
    return [pair for pair in masks.scene_image_segmentation_pairs() if pair.volume in volumes]


def downloader(n: int):
    """The ``customDownloader`` of the SampleData source of ``n`` cases (called with the source)."""
    return lambda source=None: load_cases(n)


def register(register_source, icon) -> list[str]:
    """Register :data:`SOURCES` through ``register_source`` (SampleData's
    ``SampleDataLogic.registerCustomSampleDataSource``) in the category "Rad4XCNN", with ``icon`` as their
    thumbnail; returns the names registered."""
    for name, cases in SOURCES:
        register_source(
            category="Rad4XCNN",
            sampleName=name,
            thumbnailFileName=str(icon),
            customDownloader=downloader(cases),
        )
    return [name for name, _ in SOURCES]
