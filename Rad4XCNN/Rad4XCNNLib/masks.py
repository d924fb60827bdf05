"""Masks in MRML: a segment or a labelmap as a boolean mask of an image's pixel grid, a mask as a
segmentation, and the scene's image/segmentation pairs exported as a cohort the engine reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import slicer

from Rad4XCNNLib import bridge
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- masks
def segment_id_of(segmentation_node, segment: str | None = None) -> str:
    """The id of a segment given by id or name; with ``segment`` None, the only (or the "lesion") segment."""
    if segmentation_node is None:
        raise Rad4XCNNError("no segmentation selected")
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = {sid: segmentation.GetSegment(sid).GetName() for sid in ids}
    if not ids:
        raise Rad4XCNNError(f"segmentation '{segmentation_node.GetName()}' has no segment")
    if segment:
        if segment in names:
            return segment
        by_name = [sid for sid, n in names.items() if n == segment]
        if by_name:
            return by_name[0]
        raise Rad4XCNNError(
            f"segmentation '{segmentation_node.GetName()}' has no segment '{segment}'; "
            f"segments: {', '.join(names.values())}"
        )
    if len(ids) == 1:
        return ids[0]
    lesion = [sid for sid, n in names.items() if n.lower() == "lesion"]
    if lesion:
        return lesion[0]
    raise Rad4XCNNError(
        f"segmentation '{segmentation_node.GetName()}' has {len(ids)} segments "
        f"({', '.join(names.values())}); choose one"
    )


def mask_from_segment(segmentation_node, segment: str | None, reference_volume) -> np.ndarray:
    """One segment as a boolean 2D mask in the pixel grid of the single-slice ``reference_volume`` (a 3D
    (slices, rows, columns) mask of its voxel grid when ``reference_volume`` is a 3D volume).

    The segment is exported through Slicer's segmentation logic into the reference geometry, so a
    segmentation drawn on another grid (other extent or spacing) is resampled the way Slicer does it.

    Examples
    --------
    >>> mask = mask_from_segment(seg, "lesion", volume)  # doctest: +SKIP
    >>> mask.shape == bridge.image_from_volume_node(volume).shape  # doctest: +SKIP
    True
    """
    segment_id = segment_id_of(segmentation_node, segment)
    if bridge.is_volume_3d(reference_volume):
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)
        return np.asarray(array) != 0
    thin = bridge.thin_axis(reference_volume)
    array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)
    return bridge.slice_2d(np.asarray(array), thin) != 0


def _same_grid(a, b) -> bool:
    da, db = a.GetImageData(), b.GetImageData()
    if da is None or db is None or da.GetDimensions() != db.GetDimensions():
        return False
    return bool(np.allclose(bridge.ijk_to_ras_array(a), bridge.ijk_to_ras_array(b), atol=1e-6))


def mask_from_labelmap(labelmap_node, reference_volume, label: int | None = None) -> np.ndarray:
    """A labelmap volume (voxels == ``label``, or any non-zero voxel) as a boolean mask of the reference grid
    (2D for a single-slice reference, 3D for a 3D one).

    A labelmap on another grid is resampled through a temporary segmentation, as Slicer would.
    """
    if labelmap_node is None or labelmap_node.GetImageData() is None:
        raise Rad4XCNNError(f"labelmap '{bridge.node_name(labelmap_node)}' holds no image data")
    three_d = bridge.is_volume_3d(reference_volume)
    thin = None if three_d else bridge.thin_axis(reference_volume)
    values = np.asarray(slicer.util.arrayFromVolume(labelmap_node))
    selected = values != 0 if label is None else values == label
    if _same_grid(labelmap_node, reference_volume):
        return selected if three_d else bridge.slice_2d(selected, thin)
    scene = bridge.current_scene()
    binary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__rad4xcnn_binary__")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__rad4xcnn_resample__")
    try:
        bridge.set_ijk_to_ras(binary, bridge.ijk_to_ras_array(labelmap_node))
        slicer.util.updateVolumeFromArray(binary, selected.astype(np.uint8))
        logic = slicer.modules.segmentations.logic()
        if not logic.ImportLabelmapToSegmentationNode(binary, segmentation):
            raise Rad4XCNNError(f"could not read labelmap '{labelmap_node.GetName()}' as a segmentation")
        segmentation_obj = segmentation.GetSegmentation()
        if segmentation_obj.GetNumberOfSegments() == 0:
            grid = slicer.util.arrayFromVolume(reference_volume)
            return np.zeros(grid.shape[:3] if three_d else bridge.slice_2d(grid, thin).shape[:2], bool)
        return mask_from_segment(segmentation, segmentation_obj.GetNthSegmentID(0), reference_volume)
    finally:
        for node in (binary, segmentation):
            display = node.GetDisplayNode()
            if display is not None and node.IsA("vtkMRMLLabelMapVolumeNode"):
                colour = display.GetColorNode()
                if colour is not None and colour.GetName().startswith("__rad4xcnn"):
                    scene.RemoveNode(colour)
            scene.RemoveNode(node)


def segmentation_from_mask(
    mask: np.ndarray,
    reference_volume,
    name: str,
    segment_name: str = "lesion",
    colour: Sequence[float] = (0.9, 0.2, 0.2),
    node=None,
):
    """A boolean 2D mask of ``reference_volume``'s grid as a segmentation node with one segment.

    Returns the segmentation node; its segment id is ``segment_name``.
    """
    mask = np.asarray(mask)
    thin = bridge.thin_axis(reference_volume)
    expected = bridge.slice_2d(slicer.util.arrayFromVolume(reference_volume), thin).shape[:2]
    if mask.shape != expected:
        raise Rad4XCNNError(
            f"mask of shape {mask.shape} does not match the {expected[0]}x{expected[1]} (rows x columns) "
            f"pixel grid of '{reference_volume.GetName()}'"
        )
    if node is None:
        node = bridge.current_scene().AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation = node.GetSegmentation()
    if segmentation.GetSegment(segment_name) is None:
        segmentation.AddEmptySegment(segment_name, segment_name, list(colour))
    volume_mask = np.expand_dims(mask.astype(np.uint8), axis=2 - thin)
    slicer.util.updateSegmentBinaryLabelmapFromArray(volume_mask, node, segment_name, reference_volume)
    return node


# ------------------------------------------------------------------------------------- scene cohorts
@dataclass(frozen=True)
class ScenePair:
    """An image volume of the scene and one segment of a segmentation drawn on it."""

    volume: object
    segmentation: object
    segment_id: str
    label: str | None = None
    #: the segment's name, when its segmentation has several (it then names the case too)
    segment_name: str | None = None

    @property
    def case_id(self) -> str:
        name = self.volume.GetName()
        return f"{name} {self.segment_name}" if self.segment_name else name


def scene_image_segmentation_pairs(label_attribute: str = "Rad4XCNN.label") -> list[ScenePair]:
    """Pairs of (image volume, segment) in the scene: every segment of each segmentation, with the volume
    the segmentation was drawn on (Slicer's reference image geometry), as SlicerRadiomics computes one
    result per segment.

    A segmentation with one segment gives one case named after the volume; one with several gives a case per
    segment, named ``"<volume> <segment>"``. A class label may be set on the volume node as the attribute
    ``Rad4XCNN.label``. Segmentations without a reference volume, or without segments, are skipped with a
    log message.
    """
    scene = bridge.current_scene()
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    pairs = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        segmentation = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        if segmentation.GetName().startswith("__rad4xcnn"):
            continue
        volume = segmentation.GetNodeReference(role)
        if (
            volume is None
            or not volume.IsA("vtkMRMLScalarVolumeNode")
            or volume.IsA("vtkMRMLLabelMapVolumeNode")
        ):
            log.debug("segmentation %s has no reference image volume; skipped", segmentation.GetName())
            continue
        segments = segmentation.GetSegmentation()
        count = segments.GetNumberOfSegments()
        if count == 0:
            log.debug("segmentation %s has no segment; skipped", segmentation.GetName())
        label = volume.GetAttribute(label_attribute)
        for index in range(count):
            segment_id = segments.GetNthSegmentID(index)
            name = segments.GetSegment(segment_id).GetName() if count > 1 else None
            pairs.append(ScenePair(volume, segmentation, segment_id, label, name))
    return pairs


def export_scene_cohort(pairs: Iterable[ScenePair], folder) -> object:
    """Write image/segmentation pairs as NRRD files and a cohort manifest; returns the manifest's path.

    Each image keeps its geometry; each mask is written in its image's grid. A 3D volume is written as it is
    (a 3D NRRD with its spacing, origin and direction, its segment as a 3D mask), so the engine reads the
    cohort as volumes; a scene mixing single-slice and 3D volumes stops with one line. Case ids are the
    volume names (made unique). The manifest is the one ``rad4xcnn`` reads (docs/ARCHITECTURE.md).
    """
    from pathlib import Path

    import pandas as pd

    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    folder = Path(folder)
    pairs = list(pairs)
    check_same_dims(pairs)
    rows = []
    used: set[str] = set()
    for pair in pairs:
        case_id = _unique(safe_name(pair.case_id), used)
        image_path, mask_path = (
            folder / "images" / f"{case_id}.nrrd",
            folder / "masks" / f"{case_id}_mask.nrrd",
        )
        mask = mask_from_segment(pair.segmentation, pair.segment_id, pair.volume)
        if bridge.is_volume_3d(pair.volume):
            write_volume_pair(bridge.volume_from_node(pair.volume), mask, image_path, mask_path)
        else:
            image = bridge.image_from_volume_node(pair.volume)
            write_image(image_path, image.array, like=image)
            write_image(mask_path, mask.astype(np.uint8), like=image)
        rows.append(
            {
                "case_id": case_id,
                "image": f"images/{case_id}.nrrd",
                "mask": f"masks/{case_id}_mask.nrrd",
                "label": pair.label or "",
                "has_lesion": "true" if mask.any() else "false",
            }
        )
    if not rows:
        raise Rad4XCNNError("the scene has no image volume with a segmentation drawn on it")
    manifest = folder / "manifest.csv"
    write_csv_atomic(manifest, pd.DataFrame(rows).set_index("case_id"))
    return manifest


def check_same_dims(pairs: Sequence[ScenePair]) -> None:
    """Stop with one line when ``pairs`` mix single-slice (2D) and 3D volumes, naming one of each."""
    flat = next((p for p in pairs if not bridge.is_volume_3d(p.volume)), None)
    deep = next((p for p in pairs if bridge.is_volume_3d(p.volume)), None)
    if flat is not None and deep is not None:
        raise Rad4XCNNError(
            f"the scene mixes 2D images and 3D volumes ('{flat.case_id}' is a single slice, "
            f"'{deep.case_id}' a 3D volume); export one kind at a time"
        )


def write_volume_pair(volume, mask: np.ndarray, image_path, mask_path) -> None:
    """Write a 3D volume and its mask (same grid) as NRRD files with the volume's geometry."""
    from Rad4XCNNLogic.cohort.imageio import write_image

    write_image(image_path, volume.array, like=volume)
    write_image(mask_path, mask.astype(np.uint8), like=volume)


def safe_name(text: str) -> str:
    """``text`` reduced to letters, digits, ``-``, ``_`` and ``.``: a case id or file name from a node name.

    Examples
    --------
    >>> safe_name(" Case 1/left "), safe_name("...")
    ('Case_1_left', 'case')
    """
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.strip())
    return keep.strip("._") or "case"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate
