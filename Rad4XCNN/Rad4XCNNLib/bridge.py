"""The MRML bridge: 3D Slicer nodes to and from the engine's numpy images, masks, tables, plots and CAMs.

This is the only engine module that imports ``slicer`` and ``vtk`` at module level. It runs inside 3D Slicer
and, for the test suite, on the ``slicer-core`` wheel (the real MRML library without the Qt application):
:func:`headless_slicer` builds the scene and module logics that Slicer's application would otherwise own.

Geometry: a 2D image is a single-slice volume. :class:`~Rad4XCNNLogic.cohort.imageio.Image2D` keeps
SimpleITK's
LPS convention (spacing, origin and direction in (x, y) order) while Slicer's IJK-to-RAS matrix is in RAS;
the two differ by the sign of the first two physical axes, ``RAS = diag(-1, -1, 1) @ LPS``.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from Rad4XCNNLogic.cohort.imageio import Image2D, to_grey
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

#: Multiplying LPS coordinates by this matrix gives RAS coordinates (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Name of the heat colour table that :func:`heat_colour_node` adds to the scene.
HEAT_COLOUR_NAME = "Rad4XCNN heat"
#: (position in [0, 1], red, green, blue) anchors of the heat colour table:
#: black, dark red, orange, yellow, white.
HEAT_ANCHORS = (
    (0.0, 0.0, 0.0, 0.0),
    (0.3, 0.6, 0.0, 0.0),
    (0.6, 1.0, 0.45, 0.0),
    (0.85, 1.0, 0.9, 0.1),
    (1.0, 1.0, 1.0, 1.0),
)
#: Colours of successive plot series (matplotlib's tab10 palette).
SERIES_COLOURS = (
    (0.122, 0.467, 0.706),
    (1.0, 0.498, 0.055),
    (0.173, 0.627, 0.173),
    (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741),
    (0.549, 0.337, 0.294),
)
_ATTRIBUTE = "Rad4XCNN.role"
# vtkSlicerVolumesLogic loading options (bit flags of AddArchetypeVolume)
_LABEL_MAP, _SINGLE_FILE = 1, 4
_PLOT_TABLE_LAYOUTS = tuple(
    getattr(slicer.vtkMRMLLayoutNode, name)
    for name in dir(slicer.vtkMRMLLayoutNode)
    if name.startswith("SlicerLayout") and ("Plot" in name or "Table" in name)
)
_PLOT_TABLE_LAYOUT_XML = (
    '<layout type="vertical">'
    '<item><view class="vtkMRMLPlotViewNode" singletontag="PlotView1"><property name="viewlabel" '
    'action="default">P</property></view></item>'
    '<item><view class="vtkMRMLTableViewNode" singletontag="TableView1"><property name="viewlabel" '
    'action="default">T</property></view></item>'
    "</layout>"
)


# ------------------------------------------------------------------------------------------- the scene
@dataclass
class HeadlessSlicer:
    """A scene with the module logics that Slicer's application would own, for use outside Slicer."""

    scene: object
    application_logic: object
    colors: object
    volumes: object
    segmentations: object
    plots: object
    tables: object


_HEADLESS: HeadlessSlicer | None = None


def in_slicer_application() -> bool:
    """True inside a running 3D Slicer (``slicer.app`` exists), False on the ``slicer-core`` wheel."""
    return hasattr(slicer, "app")


def headless_slicer() -> HeadlessSlicer:
    """Create a fresh MRML scene and the Colors, Volumes, Segmentations, Plots and Tables logics.

    Sets ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` as Slicer's application does, so that
    ``slicer.util`` and this module work unchanged. Also adds what Slicer's layout manager would create: the
    layout node and the slice view nodes of the "Red" view, so that layers can be set and checked.

    Examples
    --------
    >>> env = headless_slicer()  # doctest: +SKIP
    >>> node = volume_node_from_image(Image2D(np.zeros((4, 5), np.float32)), "empty")  # doctest: +SKIP
    """
    global _HEADLESS
    if in_slicer_application():
        raise RuntimeError("headless_slicer() is for plain Python; inside 3D Slicer use its own scene")
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app.SetModuleLogic("Colors", colors)
    logics = {}
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Plots", slicer.vtkSlicerPlotsLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
    ):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
    layout = slicer.vtkMRMLLayoutNode()
    layout.SetSingletonTag("vtkMRMLLayoutNode")
    scene.AddNode(layout)
    # Slicer's layout manager registers the view arrangements; here only those that show plots and tables.
    for arrangement in _PLOT_TABLE_LAYOUTS:
        if not layout.IsLayoutDescription(arrangement):
            layout.AddLayoutDescription(arrangement, _PLOT_TABLE_LAYOUT_XML)
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    slice_node.SetLayoutName("Red")
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetLayoutName("Red")

    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        **{
            name.lower(): types.SimpleNamespace(logic=(lambda logic=logic: logic))
            for name, logic in [("Colors", colors), *logics.items()]
        }
    )
    _HEADLESS = HeadlessSlicer(
        scene, app, colors, logics["Volumes"], logics["Segmentations"], logics["Plots"], logics["Tables"]
    )
    return _HEADLESS


def engine_process_environment() -> dict[str, str]:
    """The environment of a background engine process: Slicer's start-up environment inside Slicer (its
    launcher, PythonSlicer, sets up the rest), else this process's; with the engine's progress settings."""
    from Rad4XCNNLib.background import engine_environment

    return engine_environment(slicer.util.startupEnvironment() if in_slicer_application() else None)


def _scene():
    scene = getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise RuntimeError("no MRML scene: run inside 3D Slicer or call headless_slicer() first")
    return scene


def application_logic():
    """Slicer's application logic: the real one inside Slicer, a headless one on the slicer-core wheel."""
    if in_slicer_application():
        return slicer.app.applicationLogic()
    if _HEADLESS is None:
        raise RuntimeError("no application logic: run inside 3D Slicer or call headless_slicer() first")
    return _HEADLESS.application_logic


def _node_name(node) -> str:
    return node.GetName() if node is not None else "(none)"


# ------------------------------------------------------------------------------------------ geometry
def ijk_to_ras_from_image(image: Image2D, slice_spacing: float = 1.0) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of ``image`` placed as one slice at z = 0 (I = column, J = row).

    Examples
    --------
    >>> m = ijk_to_ras_from_image(Image2D(np.zeros((2, 2)), spacing=(0.5, 2.0), origin=(10.0, -5.0)))
    >>> m[:3, 3].tolist(), np.diag(m)[:3].tolist()
    ([-10.0, 5.0, 0.0], [-0.5, -2.0, 1.0])
    """
    direction = np.eye(3)
    direction[:2, :2] = np.asarray(image.direction, dtype=float).reshape(2, 2)
    scaled = direction @ np.diag([float(image.spacing[0]), float(image.spacing[1]), float(slice_spacing)])
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ scaled
    matrix[:3, 3] = LPS_TO_RAS @ np.array([float(image.origin[0]), float(image.origin[1]), 0.0])
    return matrix


def ijk_to_ras_array(node) -> np.ndarray:
    """A volume node's IJK-to-RAS matrix as a 4x4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _set_ijk_to_ras(node, array: np.ndarray) -> None:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    node.SetIJKToRASMatrix(matrix)


def _thin_axis(node) -> int:
    """The IJK axis (0 = I, 1 = J, 2 = K) along which a single-slice volume is one voxel thick."""
    image_data = node.GetImageData() if node is not None else None
    if image_data is None:
        raise Rad4XCNNError(f"volume '{_node_name(node)}' holds no image data")
    dims = image_data.GetDimensions()
    if dims[2] == 1:
        return 2
    thin = [axis for axis in range(3) if dims[axis] == 1]
    if not thin:
        raise Rad4XCNNError(
            f"volume '{_node_name(node)}' has {dims[2]} slices of {dims[0]}x{dims[1]}; "
            "Rad4XCNN works on 2D images (a single-slice volume)"
        )
    return thin[-1]


def _slice_2d(array: np.ndarray, thin_axis: int) -> np.ndarray:
    """Take the one slice of a (K, J, I[, C]) array; numpy axis = 2 - IJK axis."""
    return np.take(array, 0, axis=2 - thin_axis)


def image_from_volume_node(node) -> Image2D:
    """A single-slice scalar or vector (RGB) volume node as a grey :class:`Image2D` with its geometry.

    Colour volumes become grey by :func:`~Rad4XCNNLogic.cohort.imageio.to_grey`. The in-plane geometry
    follows the
    rule of :func:`~Rad4XCNNLogic.cohort.imageio.read_image` for a one-slice file, so that a volume loaded in
    Slicer
    and the same file read by the engine give the same image. ``meta`` keeps the node's name and its full
    IJK-to-RAS matrix.

    Examples
    --------
    >>> image = image_from_volume_node(slicer.util.getNode("case001"))  # doctest: +SKIP
    >>> image.spacing, image.origin  # doctest: +SKIP
    ((0.1, 0.1), (-12.0, 4.5))
    """
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise Rad4XCNNError(f"expected a scalar or vector volume node, got {_node_name(node)}")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise Rad4XCNNError(f"volume '{node.GetName()}' is a labelmap; choose the image, not its mask")
    thin = _thin_axis(node)
    array = _slice_2d(np.array(slicer.util.arrayFromVolume(node)), thin)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    grey = to_grey(array)
    keep = [axis for axis in range(3) if axis != thin]
    ijk_to_ras = ijk_to_ras_array(node)
    lps = LPS_TO_RAS @ ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = LPS_TO_RAS @ ijk_to_ras[:3, 3]
    return Image2D(
        grey,
        (float(spacing[keep[0]]), float(spacing[keep[1]])),
        (float(origin[keep[0]]), float(origin[keep[1]])),
        tuple(float(v) for v in direction[np.ix_(keep, keep)].ravel()),
        {
            "node": node.GetName(),
            "ijk_to_ras": ijk_to_ras.tolist(),
            "components": node.GetImageData().GetNumberOfScalarComponents(),
        },
    )


def volume_node_from_image(image: Image2D, name: str, node=None, node_class: str = "vtkMRMLScalarVolumeNode"):
    """Put an :class:`Image2D` into the scene as a single-slice volume (a new node, or ``node`` updated).

    Examples
    --------
    >>> image = Image2D(np.zeros((64, 80), np.float32), spacing=(0.2, 0.2), origin=(5.0, -3.0))
    >>> node = volume_node_from_image(image, "us")  # doctest: +SKIP
    >>> image_from_volume_node(node).origin  # doctest: +SKIP
    (5.0, -3.0)
    """
    array = np.asarray(image.array)
    if array.ndim not in (2, 3):
        raise Rad4XCNNError(f"expected a 2D image array, got shape {array.shape}")
    if node is None:
        node = _scene().AddNewNodeByClass(node_class, name)
    elif name:
        node.SetName(name)
    _set_ijk_to_ras(node, ijk_to_ras_from_image(image))
    slicer.util.updateVolumeFromArray(node, array[np.newaxis, ...])
    node.CreateDefaultDisplayNodes()
    return node


def volume_node_from_array(array: np.ndarray, like, name: str, node=None, node_class: str | None = None):
    """Put a 2D ``array`` into the scene in the geometry of the single-slice volume ``like``.

    The array must have the 2D shape of ``like`` (rows, columns); the new (or updated) node gets ``like``'s
    IJK-to-RAS matrix and slice orientation, so it overlays ``like`` voxel for voxel.
    """
    array = np.asarray(array)
    thin = _thin_axis(like)
    expected = _slice_2d(slicer.util.arrayFromVolume(like), thin).shape[:2]
    if array.shape[:2] != expected or array.ndim != 2:
        raise Rad4XCNNError(
            f"array of shape {array.shape} does not match the {expected[0]}x{expected[1]} (rows x columns) "
            f"pixel grid of '{like.GetName()}'"
        )
    if node is None:
        node = _scene().AddNewNodeByClass(node_class or "vtkMRMLScalarVolumeNode", name)
    elif name:
        node.SetName(name)
    _set_ijk_to_ras(node, ijk_to_ras_array(like))
    slicer.util.updateVolumeFromArray(node, np.expand_dims(array, axis=2 - thin))
    node.CreateDefaultDisplayNodes()
    return node


def load_volume_file(path, name: str | None = None, labelmap: bool = False):
    """Read one image file into the scene with Slicer's volume reader, as a single-slice volume.

    The file is read on its own (Slicer's "single file" option): otherwise Slicer takes numbered files beside
    it (``case (1).png``, ``case (2).png``, ... as in BUSI) for the slices of one 3D series.
    """
    from pathlib import Path

    path = Path(path)
    options = _SINGLE_FILE | (_LABEL_MAP if labelmap else 0)
    node = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), name or path.stem, options)
    if node is None:
        raise Rad4XCNNError(f"Slicer could not read {path}")
    return node


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
    """One segment as a boolean 2D mask in the pixel grid of the single-slice ``reference_volume``.

    The segment is exported through Slicer's segmentation logic into the reference geometry, so a
    segmentation drawn on another grid (other extent or spacing) is resampled the way Slicer does it.

    Examples
    --------
    >>> mask = mask_from_segment(seg, "lesion", volume)  # doctest: +SKIP
    >>> mask.shape == image_from_volume_node(volume).shape  # doctest: +SKIP
    True
    """
    segment_id = segment_id_of(segmentation_node, segment)
    thin = _thin_axis(reference_volume)
    array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)
    return _slice_2d(np.asarray(array), thin) != 0


def _same_grid(a, b) -> bool:
    da, db = a.GetImageData(), b.GetImageData()
    if da is None or db is None or da.GetDimensions() != db.GetDimensions():
        return False
    return bool(np.allclose(ijk_to_ras_array(a), ijk_to_ras_array(b), atol=1e-6))


def mask_from_labelmap(labelmap_node, reference_volume, label: int | None = None) -> np.ndarray:
    """A labelmap volume (voxels == ``label``, or any non-zero voxel) as a boolean mask of the reference grid.

    A labelmap on another grid is resampled through a temporary segmentation, as Slicer would.
    """
    if labelmap_node is None or labelmap_node.GetImageData() is None:
        raise Rad4XCNNError(f"labelmap '{_node_name(labelmap_node)}' holds no image data")
    thin = _thin_axis(reference_volume)
    values = np.asarray(slicer.util.arrayFromVolume(labelmap_node))
    selected = values != 0 if label is None else values == label
    if _same_grid(labelmap_node, reference_volume):
        return _slice_2d(selected, thin)
    scene = _scene()
    binary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__rad4xcnn_binary__")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__rad4xcnn_resample__")
    try:
        _set_ijk_to_ras(binary, ijk_to_ras_array(labelmap_node))
        slicer.util.updateVolumeFromArray(binary, selected.astype(np.uint8))
        logic = slicer.modules.segmentations.logic()
        if not logic.ImportLabelmapToSegmentationNode(binary, segmentation):
            raise Rad4XCNNError(f"could not read labelmap '{labelmap_node.GetName()}' as a segmentation")
        segmentation_obj = segmentation.GetSegmentation()
        if segmentation_obj.GetNumberOfSegments() == 0:
            return np.zeros(_slice_2d(slicer.util.arrayFromVolume(reference_volume), thin).shape[:2], bool)
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
    thin = _thin_axis(reference_volume)
    expected = _slice_2d(slicer.util.arrayFromVolume(reference_volume), thin).shape[:2]
    if mask.shape != expected:
        raise Rad4XCNNError(
            f"mask of shape {mask.shape} does not match the {expected[0]}x{expected[1]} (rows x columns) "
            f"pixel grid of '{reference_volume.GetName()}'"
        )
    if node is None:
        node = _scene().AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation = node.GetSegmentation()
    if segmentation.GetSegment(segment_name) is None:
        segmentation.AddEmptySegment(segment_name, segment_name, list(colour))
    volume_mask = np.expand_dims(mask.astype(np.uint8), axis=2 - thin)
    slicer.util.updateSegmentBinaryLabelmapFromArray(volume_mask, node, segment_name, reference_volume)
    return node


# -------------------------------------------------------------------------------------------- tables
def table_node_from_dataframe(
    frame,
    name: str,
    node=None,
    index: bool = True,
    descriptions: Mapping[str, str] | None = None,
):
    """A pandas DataFrame as a ``vtkMRMLTableNode`` (new, or ``node`` refilled), one typed column per column.

    With ``index`` the index becomes the first column (named after the index, or ``case_id``/``name``),
    as in the run folder's CSV tables. Numbers become double or integer columns, booleans bit columns,
    anything else text; missing values become NaN (numbers) or empty text. ``descriptions`` fills the
    columns' descriptions (shown as tooltips in Slicer's table view).

    Examples
    --------
    >>> frame = pd.read_csv("run/explanations.csv", index_col=0)  # doctest: +SKIP
    >>> node = table_node_from_dataframe(frame, "explanations")  # doctest: +SKIP
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if index:
        index_name = frame.index.name or ("name" if not pd.api.types.is_integer_dtype(frame.index) else "row")
        frame = (
            frame.reset_index(names=index_name) if index_name not in frame.columns else frame.reset_index()
        )
    if node is None:
        node = _scene().AddNewNodeByClass("vtkMRMLTableNode", name)
    elif name:
        node.SetName(name)
    table = node.GetTable()
    was_modifying = node.StartModify()
    node.RemoveAllColumns()
    for column_name in frame.columns:
        values = frame[column_name]
        column = _vtk_column(values)
        column.SetName(str(column_name))
        table.AddColumn(column)
    table.Modified()
    for column_name, text in (descriptions or {}).items():
        if str(column_name) in [str(c) for c in frame.columns]:
            node.SetColumnDescription(str(column_name), str(text))
    node.EndModify(was_modifying)
    node.Modified()
    return node


def _vtk_column(values):
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        column = vtk.vtkBitArray()
        column.SetNumberOfValues(len(values))
        for row, value in enumerate(values.to_numpy()):
            column.SetValue(row, int(bool(value)))
        return column
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return numpy_support.numpy_to_vtk(
            values.to_numpy(dtype=np.int64), deep=True, array_type=vtk.VTK_LONG_LONG
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        return numpy_support.numpy_to_vtk(
            values.to_numpy(dtype=np.float64), deep=True, array_type=vtk.VTK_DOUBLE
        )
    column = vtk.vtkStringArray()
    column.SetNumberOfValues(len(values))
    for row, value in enumerate(values.tolist()):
        column.SetValue(
            row, "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        )
    return column


def dataframe_from_table_node(node, index_col: int | str | None = 0):
    """A ``vtkMRMLTableNode`` as a pandas DataFrame, with typed columns; ``index_col`` becomes the index."""
    import pandas as pd

    if node is None or not node.IsA("vtkMRMLTableNode"):
        raise Rad4XCNNError(f"expected a table node, got {_node_name(node)}")
    table = node.GetTable()
    data = {}
    for i in range(table.GetNumberOfColumns()):
        column = table.GetColumn(i)
        name = column.GetName() or f"column{i}"
        n = column.GetNumberOfTuples()
        if isinstance(column, vtk.vtkStringArray):
            data[name] = [column.GetValue(r) for r in range(n)]
        elif isinstance(column, vtk.vtkBitArray):
            data[name] = np.array([bool(column.GetValue(r)) for r in range(n)], dtype=bool)
        elif column.GetNumberOfComponents() == 1:
            data[name] = numpy_support.vtk_to_numpy(column).copy()
        else:
            array = numpy_support.vtk_to_numpy(column)
            data[name] = [tuple(row) for row in array]
    frame = pd.DataFrame(data)
    if index_col is not None and len(frame.columns):
        key = frame.columns[index_col] if isinstance(index_col, int) else index_col
        frame = frame.set_index(key)
    return frame


# --------------------------------------------------------------------------------------------- plots
def _chart(name: str, chart=None):
    if chart is None:
        chart = _scene().AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    return chart


def _series(chart, table, name: str, x: str, y: str, plot_type: int, colour, marker=None, line=None):
    """Find the chart's series ``name`` (or add it) and point it at ``table``'s columns ``x`` and ``y``."""
    scene = _scene()
    series = None
    for i in range(chart.GetNumberOfPlotSeriesNodes()):
        candidate = chart.GetNthPlotSeriesNode(i)
        if candidate is not None and candidate.GetName() == name:
            series = candidate
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName(x)
    series.SetYColumnName(y)
    series.SetPlotType(plot_type)
    series.SetColor(*colour)
    if marker is not None:
        series.SetMarkerStyle(marker)
    if line is not None:
        series.SetLineStyle(line)
    return series


def plot_coverage(coverage, threshold: float | None = None, name: str = "Rad4XCNN coverage", chart=None):
    """Plot the explained fraction of deep features against M: one line per column of ``coverage``.

    ``coverage`` is a DataFrame indexed by M with one column per series (e.g. per backbone), values in
    [0, 1]. With ``threshold`` a vertical marker shows the current M. Returns the chart node; its table
    node is referenced by the series. Called again with the same ``chart``, it updates the nodes in place.

    Examples
    --------
    >>> m = pd.Index([0.5, 0.6, 0.7], name="M")  # doctest: +SKIP
    >>> cov = pd.DataFrame({"resnet50": [0.9, 0.6, 0.2]}, index=m)  # doctest: +SKIP
    >>> chart = plot_coverage(cov, threshold=0.6)  # doctest: +SKIP
    """
    import pandas as pd

    frame = pd.DataFrame(coverage).astype(float)
    frame.index = frame.index.astype(float)
    frame.index.name = "M"
    chart = _chart(name, chart)
    table = _chart_table(chart, "data", f"{name} table")
    table_node_from_dataframe(frame.sort_index(), "", node=table)
    for i, column in enumerate(frame.columns):
        _series(
            chart,
            table,
            str(column),
            "M",
            str(column),
            slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
            SERIES_COLOURS[i % len(SERIES_COLOURS)],
            marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle,
            line=slicer.vtkMRMLPlotSeriesNode.LineStyleSolid,
        )
    set_threshold_marker(chart, threshold, (0.0, 1.0))
    chart.SetTitle("Deep features explained by radiomics")
    chart.SetXAxisTitle("M (threshold on |Spearman rho|)")
    chart.SetYAxisTitle("fraction of deep features explained")
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetYAxisRangeAuto(False)
    chart.SetAttribute(_ATTRIBUTE, "coverage")
    return chart


def _chart_table(chart, role: str, name: str):
    """The table node referenced by ``chart`` under ``role``, created when missing."""
    reference = f"Rad4XCNN.{role}"
    table = chart.GetNodeReference(reference)
    if table is None:
        table = _scene().AddNewNodeByClass("vtkMRMLTableNode", name)
        chart.SetNodeReferenceID(reference, table.GetID())
    return table


def set_threshold_marker(chart, threshold: float | None, y_range: tuple[float, float]) -> None:
    """Show (or, with ``threshold`` None, hide) a dashed vertical line at M on ``chart``."""
    import pandas as pd

    name = "M"
    table = _chart_table(chart, "marker", f"{chart.GetName()} M")
    for i in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(i)
        if series is not None and series.GetName() == name and threshold is None:
            chart.RemovePlotSeriesNodeID(series.GetID())
            _scene().RemoveNode(series)
            return
    if threshold is None:
        return
    marker = pd.DataFrame({"x": [float(threshold)] * 2, "y": [float(y_range[0]), float(y_range[1])]})
    table_node_from_dataframe(marker, "", node=table, index=False)
    _series(
        chart,
        table,
        name,
        "x",
        "y",
        slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
        (0.3, 0.3, 0.3),
        marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone,
        line=slicer.vtkMRMLPlotSeriesNode.LineStyleDash,
    )


def rho_histogram(rho, bins: int = 40, threshold: float | None = None):
    """Counts of rho values in ``bins`` equal bins over [-1, 1], split at ``|rho| >= threshold``.

    Returns a DataFrame indexed by the bin centre ``rho`` with columns ``below M`` and ``|rho| >= M``
    (a bin is counted in the second when its centre's magnitude reaches M). NaNs are left out.
    """
    import pandas as pd

    values = np.asarray(rho, dtype=float).ravel()
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(np.clip(values, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    explained = np.abs(centres) >= threshold if threshold is not None else np.zeros(bins, bool)
    frame = pd.DataFrame(
        {"below M": np.where(explained, 0, counts), "|rho| >= M": np.where(explained, counts, 0)},
        index=pd.Index(np.round(centres, 6), name="rho"),
    )
    return frame


def plot_rho_histogram(
    rho, threshold: float | None = None, bins: int = 40, name: str = "Rad4XCNN rho histogram", chart=None
):
    """Plot the histogram of Spearman's rho (all deep x radiomic pairs), bins at ``|rho| >= M`` highlighted.

    ``rho`` is any array of correlations (e.g. the full deep x radiomic matrix). Returns the chart node;
    called again with the same ``chart`` (e.g. when the M slider moves) it refills the same nodes.
    """
    frame = rho_histogram(rho, bins=bins, threshold=threshold)
    chart = _chart(name, chart)
    table = _chart_table(chart, "data", f"{name} table")
    table_node_from_dataframe(frame, "", node=table)
    for column, colour in zip(frame.columns, ((0.6, 0.6, 0.6), (0.839, 0.153, 0.157)), strict=True):
        _series(chart, table, column, "rho", column, slicer.vtkMRMLPlotSeriesNode.PlotTypeBar, colour)
    chart.SetTitle("Spearman rho, deep x radiomic features")
    chart.SetXAxisTitle("rho")
    chart.SetYAxisTitle("feature pairs")
    chart.SetAttribute(_ATTRIBUTE, "rho-histogram")
    return chart


def series_values(chart, series_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) values that ``chart``'s series ``series_name`` plots, read back from its table node."""
    for i in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(i)
        if series is not None and series.GetName() == series_name:
            table = dataframe_from_table_node(series.GetTableNode(), index_col=None)
            return (
                table[series.GetXColumnName()].to_numpy(dtype=float),
                table[series.GetYColumnName()].to_numpy(dtype=float),
            )
    raise KeyError(f"chart '{chart.GetName()}' has no series '{series_name}'")


# ------------------------------------------------------------------------------------------ showing
def show_table(table_node) -> None:
    """Make ``table_node`` the active table and show it in Slicer's table view."""
    app = application_logic()
    if in_slicer_application():
        layout_manager = slicer.app.layoutManager()
        if layout_manager is not None:
            layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
    app.GetSelectionNode().SetActiveTableID(table_node.GetID())
    app.PropagateTableSelection()


def show_chart(chart_node) -> None:
    """Show ``chart_node`` in Slicer's plot view (switching to a layout that has one if needed)."""
    slicer.modules.plots.logic().ShowChartInLayout(chart_node)


# ---------------------------------------------------------------------------------------- CAM overlay
def _colour_at(position: float) -> tuple[float, float, float]:
    anchors = np.asarray(HEAT_ANCHORS)
    return tuple(float(np.interp(position, anchors[:, 0], anchors[:, c])) for c in (1, 2, 3))


def _fill_heat(node, size: int) -> None:
    node.SetNumberOfColors(size)
    for i in range(size):
        r, g, b = _colour_at(i / (size - 1))
        node.SetColor(i, f"{i}", r, g, b, 1.0)


def _holds_heat(node, size: int) -> bool:
    """True when ``node`` holds the heat colours (checked at the ends and the middle of the table)."""
    if node.GetNumberOfColors() != size or node.GetLookupTable() is None:
        return False
    for i in (0, size // 2, size - 1):
        rgba = [0.0, 0.0, 0.0, 0.0]
        if not node.GetColor(i, rgba) or not np.allclose(rgba[:3], _colour_at(i / (size - 1)), atol=1e-2):
            return False
    return True


def heat_colour_node(name: str = HEAT_COLOUR_NAME, size: int = 256):
    """The scene's heat colour table for CAMs (black, red, orange, yellow, white), added once per scene.

    It is an ordinary node, not a singleton: a singleton User colour table outlives File > Close Scene
    (vtkMRMLScene::Clear keeps singletons and only resets them, Libs/MRML/Core/vtkMRMLScene.cxx and
    vtkMRMLColorTableNode::Reset at v5.10.0), so it could come back without its colours and be reused by
    name; a singleton tag with a space also put a space in the node id. A node of that name that has lost
    its colours (from an old scene, or edited) is filled again.
    """
    scene = _scene()
    nodes = scene.GetNodesByName(name)
    for i in range(nodes.GetNumberOfItems()):
        existing = nodes.GetItemAsObject(i)
        if existing.IsA("vtkMRMLColorTableNode") and existing.GetAttribute("Category") == "Rad4XCNN":
            if not _holds_heat(existing, size):
                log.debug("colour table %s had lost its colours; filled again", existing.GetID())
                _fill_heat(existing, size)
            return existing
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(name)
    node.SetTypeToUser()
    _fill_heat(node, size)
    node.SetAttribute("Category", "Rad4XCNN")
    node.SetHideFromEditors(False)
    return scene.AddNode(node)


def colour_node(colour: str | None):
    """A colour node by name or id: None or ``"heat"`` for :func:`heat_colour_node`, else e.g. ``"Iron"``."""
    if colour in (None, "", "heat", HEAT_COLOUR_NAME):
        return heat_colour_node()
    scene = _scene()
    node = scene.GetNodeByID(colour) or scene.GetFirstNodeByName(colour)
    for prefix in ("vtkMRMLColorTableNode", "vtkMRMLPETProceduralColorNode", "vtkMRMLProceduralColorNode"):
        node = node or scene.GetNodeByID(prefix + colour)
    if node is None or not node.IsA("vtkMRMLColorNode"):
        raise Rad4XCNNError(f"unknown colour table '{colour}'")
    return node


def cam_overlay(
    cam,
    image_volume,
    opacity: float = 0.5,
    colour: str | None = None,
    name: str | None = None,
    node=None,
    normalise: bool = True,
):
    """Show a CAM over its image: a scalar volume in the image's geometry, heat colours, foreground layer.

    ``cam`` is a 2D array (or :class:`Image2D`) of the image's pixel grid; with ``normalise`` it is scaled to
    [0, 1] (a constant map becomes zeros). The volume's window spans [0, 1] so colours mean the same across
    cases and methods. Every slice view gets ``image_volume`` as background and the CAM as foreground at
    ``opacity``. Returns the CAM volume node (new, or ``node`` refilled).

    Examples
    --------
    >>> overlay = cam_overlay(gradcam, slicer.util.getNode("case001"), opacity=0.4)  # doctest: +SKIP
    """
    array = np.asarray(cam.array if isinstance(cam, Image2D) else cam, dtype=np.float32)
    if not np.isfinite(array).all():
        raise Rad4XCNNError("the CAM holds NaN or infinite values")
    if not 0.0 <= float(opacity) <= 1.0:
        raise Rad4XCNNError(f"opacity must be between 0 and 1, got {opacity}")
    if normalise:
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    name = name or f"{image_volume.GetName()} CAM"
    node = volume_node_from_array(array, image_volume, name, node=node)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(colour_node(colour).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetInterpolate(True)
    node.SetAttribute(_ATTRIBUTE, "cam")
    slicer.util.setSliceViewerLayers(
        background=image_volume, foreground=node, foregroundOpacity=float(opacity)
    )
    return node


def set_overlay_opacity(opacity: float) -> None:
    """Set the foreground opacity of every slice view (the CAM slider)."""
    slicer.util.setSliceViewerLayers(foregroundOpacity=float(opacity))


def slice_layers() -> list[dict]:
    """Background, foreground and foreground opacity of every slice view (to check what is shown)."""
    scene = _scene()
    layers = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        layers.append(
            {
                "view": composite.GetLayoutName(),
                "background": composite.GetBackgroundVolumeID(),
                "foreground": composite.GetForegroundVolumeID(),
                "opacity": composite.GetForegroundOpacity(),
            }
        )
    return layers


# ------------------------------------------------------------------------------------- scene cohorts
@dataclass(frozen=True)
class ScenePair:
    """An image volume of the scene and the segmentation (and segment) drawn on it."""

    volume: object
    segmentation: object
    segment_id: str
    label: str | None = None

    @property
    def case_id(self) -> str:
        return self.volume.GetName()


def scene_image_segmentation_pairs(label_attribute: str = "Rad4XCNN.label") -> list[ScenePair]:
    """Pairs of (image volume, segmentation) in the scene: each segmentation with its reference volume.

    A segmentation's reference volume is the one it was drawn on (Slicer's reference image geometry). The
    segment is the only one, or the one named "lesion". A class label may be set on the volume node as the
    attribute ``Rad4XCNN.label``. Segmentations without a reference volume or with several segments and no
    "lesion" are skipped with a log message.
    """
    scene = _scene()
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
        try:
            segment_id = segment_id_of(segmentation)
        except Rad4XCNNError as exc:
            log.debug("%s; skipped", exc)
            continue
        pairs.append(ScenePair(volume, segmentation, segment_id, volume.GetAttribute(label_attribute)))
    return pairs


def export_scene_cohort(pairs: Iterable[ScenePair], folder) -> object:
    """Write image/segmentation pairs as NRRD files and a cohort manifest; returns the manifest's path.

    Each image keeps its geometry; each mask is written in its image's grid. Case ids are the volume names
    (made unique). The manifest is the one ``rad4xcnn`` reads (docs/ARCHITECTURE.md).
    """
    from pathlib import Path

    import pandas as pd

    from Rad4XCNNLogic.cohort.imageio import write_image
    from Rad4XCNNLogic.infra.storage import write_csv_atomic

    folder = Path(folder)
    rows = []
    used: set[str] = set()
    for pair in pairs:
        case_id = _unique(safe_name(pair.case_id), used)
        image = image_from_volume_node(pair.volume)
        mask = mask_from_segment(pair.segmentation, pair.segment_id, pair.volume)
        write_image(folder / "images" / f"{case_id}.nrrd", image.array, like=image)
        write_image(folder / "masks" / f"{case_id}_mask.nrrd", mask.astype(np.uint8), like=image)
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
