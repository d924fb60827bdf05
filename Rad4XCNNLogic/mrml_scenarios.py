"""Self-test scenarios of the Slicer module, written once and run in two places.

Slicer's test runner runs them through ``Rad4XCNNTest`` (in ``Rad4XCNN/Rad4XCNN.py``); the pytest suite runs
each one on the ``slicer-core`` wheel with real MRML classes (``Testing/test_mrml_scenarios.py``). They work
on ``slicer.mrmlScene`` and ``slicer.modules``, whichever application set them up, on a small synthetic
cohort that the scenario writes itself. A failed check raises :class:`ScenarioError` saying what was expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from . import mrml_bridge as bridge

#: Size of the synthetic cohort: enough cases for Spearman's rho to mean something, small enough to be quick.
N_CASES = 24
SHAPE = (96, 120)


class ScenarioError(AssertionError):
    """A self-test scenario found something other than what it expected."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioError(message)


@dataclass
class LoadedScene:
    """One case loaded into the scene as a user would load it: an image volume and its segmentation."""

    case_id: str
    volume: object
    segmentation: object
    segment_id: str
    manifest: Path


def make_cohort(folder: Path, n: int = N_CASES, seed: int = 0) -> Path:
    """Scenario 0: write a small synthetic breast-ultrasound cohort (NRRD, 0.1 mm pixels); its manifest."""
    from .cohort import read_manifest
    from .synthetic import make_synthetic_cohort

    manifest = make_synthetic_cohort(Path(folder) / "cohort", n=n, seed=seed, shape=SHAPE, fmt="nrrd")
    cohort = read_manifest(manifest, check_images=True)
    _check(len(cohort) == n and not cohort.failures, f"expected {n} good synthetic cases, got {len(cohort)}")
    return manifest


def load_image_and_segmentation(manifest: Path, index: int = 0) -> LoadedScene:
    """Scenario 1: load a case's image and mask files with Slicer's readers; the mask becomes a segmentation.

    Checks that the volume read by Slicer is the image the engine reads (pixels and geometry) and that the
    segment is the mask.
    """
    from .cohort import read_manifest

    case = read_manifest(manifest).cases[index]
    loaded = case.load()
    volume = bridge.load_volume_file(case.image, case.case_id)
    labelmap = bridge.load_volume_file(case.masks[0], f"{case.case_id} mask", labelmap=True)
    _check(labelmap.IsA("vtkMRMLLabelMapVolumeNode"), "the mask is not a labelmap")
    scene = slicer.mrmlScene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{case.case_id} segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    _check(
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation),
        "the labelmap could not be imported into a segmentation",
    )
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    segmentation.GetSegmentation().GetSegment(segment_id).SetName("lesion")
    scene.RemoveNode(labelmap)

    image = bridge.image_from_volume_node(volume)
    _check(image.shape == loaded.image.shape, f"image shape {image.shape} != {loaded.image.shape}")
    _check(np.array_equal(image.array, loaded.image.array), "the pixels Slicer read differ from the engine's")
    _check(
        np.allclose(image.spacing, loaded.image.spacing) and np.allclose(image.origin, loaded.image.origin),
        f"geometry differs: Slicer {image.spacing}/{image.origin}, "
        f"engine {loaded.image.spacing}/{loaded.image.origin}",
    )
    return LoadedScene(case.case_id, volume, segmentation, segment_id, Path(manifest))


def export_mask(scene_case: LoadedScene, folder: Path) -> Path:
    """Scenario 2: export the segment as a mask in the image's geometry and as a cohort the engine reads.

    Returns the exported manifest; its case must load with the original image and mask.
    """
    from .cohort import read_manifest

    mask = bridge.mask_from_segment(scene_case.segmentation, "lesion", scene_case.volume)
    original = next(
        c for c in read_manifest(scene_case.manifest).cases if c.case_id == scene_case.case_id
    ).load()
    _check(mask.shape == original.mask.shape, f"mask shape {mask.shape} != {original.mask.shape}")
    _check(np.array_equal(mask, original.mask), "the exported mask differs from the mask file")
    pairs = [p for p in bridge.scene_image_segmentation_pairs() if p.volume is scene_case.volume]
    _check(len(pairs) == 1, "the loaded image and segmentation are not found as a pair in the scene")
    manifest = bridge.export_scene_cohort(pairs, Path(folder) / "exported")
    (case,) = read_manifest(manifest, check_images=True).cases
    exported = case.load()
    _check(np.array_equal(exported.mask, original.mask), "the exported cohort's mask differs")
    _check(np.allclose(exported.image.array, original.image.array), "the exported cohort's image differs")
    _check(np.allclose(exported.image.spacing, original.image.spacing), "the exported image lost its spacing")
    return manifest


def lesion_map(scene_case: LoadedScene) -> np.ndarray:
    """A smooth map peaking inside the lesion: a stand-in for a CAM, to check the overlay's placement."""
    from scipy import ndimage

    mask = bridge.mask_from_segment(scene_case.segmentation, "lesion", scene_case.volume)
    inside = ndimage.distance_transform_edt(mask)
    return ndimage.gaussian_filter(inside, sigma=3.0)


def add_cam_overlay(scene_case: LoadedScene, cam: np.ndarray | None = None, opacity: float = 0.4):
    """Scenario 5: show a CAM over the image: heat colours, foreground layer, the image's geometry.

    ``cam`` defaults to :func:`lesion_map`. Returns the CAM volume node.
    """
    cam = lesion_map(scene_case) if cam is None else np.asarray(cam)
    node = bridge.cam_overlay(cam, scene_case.volume, opacity=opacity)
    _check(
        np.allclose(bridge.ijk_to_ras_array(node), bridge.ijk_to_ras_array(scene_case.volume)),
        "the CAM volume is not in the image's geometry",
    )
    shown = bridge.image_from_volume_node(node).array
    peak = np.unravel_index(int(np.argmax(shown)), shown.shape)
    _check(peak == np.unravel_index(int(np.argmax(cam)), cam.shape), "the CAM's peak moved in the overlay")
    _check(abs(float(shown.max()) - 1.0) < 1e-6, "the CAM is not scaled to [0, 1]")
    colour = node.GetDisplayNode().GetColorNode()
    _check(colour is not None and colour.GetName() == bridge.HEAT_COLOUR_NAME, "the CAM has no heat colours")
    layers = bridge.slice_layers()
    _check(bool(layers), "the scene has no slice view")
    for layer in layers:
        _check(layer["foreground"] == node.GetID(), f"view {layer['view']} does not show the CAM in front")
        _check(layer["background"] == scene_case.volume.GetID(), f"view {layer['view']} lost the image")
        _check(abs(layer["opacity"] - opacity) < 1e-9, f"view {layer['view']} has opacity {layer['opacity']}")
    return node


def run_all(folder: Path) -> Iterator[tuple[str, str]]:
    """Run every scenario in order in ``folder``; yields (scenario, outcome) as each one passes."""
    folder = Path(folder)
    manifest = make_cohort(folder)
    yield "synthetic cohort", f"{N_CASES} cases in {manifest.parent}"
    scene_case = load_image_and_segmentation(manifest)
    yield "load image and segmentation", scene_case.case_id
    exported = export_mask(scene_case, folder)
    yield "export the mask", str(exported)
    node = add_cam_overlay(scene_case)
    yield "CAM overlay", node.GetName()
