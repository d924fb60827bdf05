"""The Case panel's maps: which saliency map to trust (a table node of each CAM method's flags,
faithfulness, randomisation result and verdict) and voxel-based radiomic feature maps as volumes with a
selectable colour map, shown instead of the CAM or beside it (in the other slice views).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import slicer

from Rad4XCNNLib import bridge, overlays, tables
from Rad4XCNNLib.parameters import FEATURE_COLOURS
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

DEFAULT_FEATURE_COLOUR = FEATURE_COLOURS[0]
#: Columns of the trust table: per method over the cohort, then the case's own values.
TRUST_COLUMNS = (
    "verdict",
    "flagged_maps",
    "road_combined",
    "deletion_auc",
    "insertion_auc",
    "paired_gain",
    "beats_baselines",
    "randomisation_similarity",
)
_ATTRIBUTE = "Rad4XCNN.featuremap"


def cam_trust_frame(cam_folder, case_id: str | None = None):
    """Per CAM method: the cohort's verdict and figures (``cam_summary.csv``) and, with ``case_id``, the
    case's own flags and scores (``cam_metrics.csv``), as a DataFrame indexed by method."""
    import pandas as pd

    folder = Path(cam_folder)
    summary_path = folder / "cam_summary.csv"
    if not summary_path.is_file():
        raise Rad4XCNNError(
            f"no CAM summary in {folder} (cam_summary.csv): compute the CAMs with checks first"
        )
    summary = pd.read_csv(summary_path, index_col=0)
    frame = summary[[c for c in TRUST_COLUMNS if c in summary.columns]].copy()
    frame.index.name = "method"
    if case_id is not None:
        metrics = pd.read_csv(folder / "cam_metrics.csv", dtype={"case_id": str, "flags": str})
        rows = metrics[metrics["case_id"] == str(case_id)].set_index("method")
        if rows.empty:
            raise Rad4XCNNError(f"case {case_id} has no saliency map in {folder}")
        case_columns = ["flags", "road_combined", "deletion_auc", "insertion_auc", "randomisation_similarity"]
        case = rows[[c for c in case_columns if c in rows.columns]].add_prefix("case_")
        case["case_flags"] = case.get("case_flags", pd.Series("", case.index)).fillna("")
        frame = frame.join(case, how="outer")
    return frame


def show_cam_trust(cam_folder, case_id: str | None = None, node=None):
    """The trust table (:func:`cam_trust_frame`) as a ``vtkMRMLTableNode`` (new, or ``node`` refilled)."""
    frame = cam_trust_frame(cam_folder, case_id)
    descriptions = {
        "verdict": "one line per method on this cohort: whether to trust its maps, and why",
        "flagged_maps": "maps that are empty, constant, non-finite, saturated or outside the lesion",
        "road_combined": "ROAD (most minus least relevant first) / 2: above 0 when the map's pixels matter",
        "deletion_auc": "class probability as the map's top pixels are removed (lower is better)",
        "insertion_auc": "class probability as the map's top pixels are restored (higher is better)",
        "paired_gain": "smallest mean gain, case by case, of ROAD and insertion - deletion over a random map "
        "and over the map shuffled within the lesion",
        "beats_baselines": "every 95% interval of those gains is above 0 (needed to be supported)",
        "randomisation_similarity": "Spearman with the map of a randomly weighted model (high: not learnt)",
    }
    return tables.table_node_from_dataframe(frame, "Rad4XCNN CAM trust", node=node, descriptions=descriptions)


def set_feature_colour(node, colour: str = DEFAULT_FEATURE_COLOUR) -> None:
    """Give a feature-map volume another colour map (a name of :data:`FEATURE_COLOURS` or any colour node)."""
    node.GetDisplayNode().SetAndObserveColorNodeID(overlays.colour_node(colour).GetID())


def feature_map_nodes() -> list:
    """The feature-map volumes in the scene (made by :func:`feature_map_volume`)."""
    scene = slicer.mrmlScene
    nodes = (
        scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    )
    return [n for n in nodes if n.GetAttribute(_ATTRIBUTE)]


def recolour_feature_maps(colour: str) -> int:
    """Give every feature-map volume of the scene the colour map ``colour``; returns how many."""
    nodes = feature_map_nodes()
    for node in nodes:
        set_feature_colour(node, colour)
    return len(nodes)


def feature_map_volume(
    feature_map, image_volume, feature: str, colour: str = DEFAULT_FEATURE_COLOUR, node=None
):
    """A voxel-based feature map (path to its NRRD, :class:`Image2D` or 2D array on the image's grid; for a
    3D ``image_volume`` a 3D NRRD or (slices, rows, columns) array) as a scalar volume over
    ``image_volume``, coloured by ``colour``.

    The window spans the map's finite values inside the lesion (pixels outside the lesion hold 0, undefined
    ones NaN, shown as 0), so that the colours use the whole range of the feature in this lesion.
    """
    if isinstance(feature_map, (str, Path)):
        feature_map = bridge.read_map_array(feature_map)
    array = np.asarray(getattr(feature_map, "array", feature_map), np.float32)
    inside = array[np.isfinite(array) & (array != 0)]
    shown = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    node = bridge.volume_node_like(shown, image_volume, f"{image_volume.GetName()} {feature}", node=node)
    display = node.GetDisplayNode()
    set_feature_colour(node, colour)
    low, high = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 1.0)
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(low, high if high > low else low + 1.0)
    display.SetInterpolate(False)  # each pixel is its own kernel's value
    node.SetAttribute(_ATTRIBUTE, feature)
    overlays.colour_legend(node, feature)
    return node


def show_feature_map(
    node, image_volume, placement: str = "instead", opacity: float = 0.6, cam_node=None
) -> None:
    """Show a feature-map volume over its image: ``instead`` of the CAM in every slice view, or ``beside``
    it (the CAM stays in the Red view, the feature map goes to the other views)."""
    if placement not in ("instead", "beside"):
        raise Rad4XCNNError(f"placement must be 'instead' or 'beside', got {placement!r}")
    scene = slicer.mrmlScene
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(image_volume.GetID())
        keep_cam = placement == "beside" and composite.GetLayoutName() == "Red"
        foreground = cam_node if keep_cam else node
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))


def load_feature_maps(folder, case_id: str, image_volume, colour: str = DEFAULT_FEATURE_COLOUR) -> dict:
    """Every feature map of a case written by ``rad4xcnn featuremaps`` (``featuremaps.csv`` in ``folder``)
    as volumes: ``{feature: volume node}``."""
    import pandas as pd

    table_path = Path(folder) / "featuremaps.csv"
    if not table_path.is_file():
        raise Rad4XCNNError(f"no feature maps in {folder} (featuremaps.csv)")
    table = pd.read_csv(table_path, dtype={"case_id": str})
    rows = table[table["case_id"] == str(case_id)]
    nodes = {}
    for row in rows.itertuples():
        path = Path(folder) / str(row.file)
        if not path.is_file():
            log.warning("feature map %s of case %s is missing: %s", row.feature, case_id, path)
            continue
        nodes[row.feature] = feature_map_volume(path, image_volume, row.feature, colour)
    return nodes


def _table_by_name(name: str):
    node = slicer.mrmlScene.GetFirstNodeByName(name)
    return node if node is not None and node.IsA("vtkMRMLTableNode") else None


def show_case_maps(
    folder,
    image_volume,
    colour: str = DEFAULT_FEATURE_COLOUR,
    placement: str | None = None,
    opacity: float = 0.6,
    cam_node=None,
) -> list[str]:
    """What ``rad4xcnn case`` left in ``folder`` beside the CAM: the trust table (``cam/cam_summary.csv``)
    and the feature maps (``featuremaps/``), loaded into the scene; with ``placement`` the first feature map
    is shown instead of or beside the CAM (:func:`show_feature_map`). Returns one note per thing shown."""
    import pandas as pd

    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        return []
    case_id = str(pd.read_csv(manifest, dtype={"case_id": str})["case_id"].iloc[0])
    notes = []
    if (folder / "cam" / "cam_summary.csv").is_file():
        node = show_cam_trust(folder / "cam", case_id, node=_table_by_name("Rad4XCNN CAM trust"))
        notes.append(f"which map to trust: table '{node.GetName()}'")
    if (folder / "featuremaps" / "featuremaps.csv").is_file():
        maps = load_feature_maps(folder / "featuremaps", case_id, image_volume, colour)
        if maps:
            notes.append(f"{len(maps)} radiomic feature map(s) loaded ({', '.join(maps)})")
            if placement is not None:
                first = next(iter(maps))
                show_feature_map(maps[first], image_volume, placement, opacity, cam_node=cam_node)
                notes.append(f"{first} shown {placement} {'of' if placement == 'instead' else ''} the CAM")
    return notes
