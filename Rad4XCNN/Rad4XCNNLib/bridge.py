"""The MRML bridge: the scene (Slicer's, or a headless one), and 3D Slicer volumes to and from the engine's
numpy images.

It runs inside 3D Slicer and, for the test suite, on the ``slicer-core`` wheel (the real MRML library
without the Qt application): :func:`headless_slicer` builds the scene and module logics that Slicer's
application would otherwise own. The other MRML jobs build on it, one module each: ``masks`` (segments,
labelmaps, the scene's image/segmentation pairs), ``tables`` (table nodes), ``plots`` (plot charts) and
``overlays`` (CAM overlays, colour tables and their legends).

Geometry: a 2D image is a single-slice volume. :class:`~Rad4XCNNLogic.cohort.imageio.Image2D` keeps
SimpleITK's
LPS convention (spacing, origin and direction in (x, y) order) while Slicer's IJK-to-RAS matrix is in RAS;
the two differ by the sign of the first two physical axes, ``RAS = diag(-1, -1, 1) @ LPS``.
"""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from Rad4XCNNLogic.cohort.imageio import Image2D, to_grey
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

#: Multiplying LPS coordinates by this matrix gives RAS coordinates (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: The attribute that marks the nodes Rad4XCNN made, with their role ("cam", "coverage", ...).
ROLE_ATTRIBUTE = "Rad4XCNN.role"
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
#: slicer-core holds the Volume Rendering module logic (checked, as a wheel might not)
_HAS_VOLUME_RENDERING = hasattr(slicer, "vtkSlicerVolumeRenderingLogic")


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
    # the colour legend's node class, which Slicer's Colors module registers (vtkSlicerColorLogic at v5.10.0)
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    logics = {}
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Plots", slicer.vtkSlicerPlotsLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
        *([("VolumeRendering", slicer.vtkSlicerVolumeRenderingLogic)] if _HAS_VOLUME_RENDERING else []),
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
    launcher, PythonSlicer, sets up the rest), else this process's; with the engine's progress settings,
    and the installed pyradiomics-bhklab ahead of another ``radiomics`` on PYTHONPATH (radiomics_check)."""
    from Rad4XCNNLib.background import engine_environment
    from Rad4XCNNLib.radiomics_check import prefer_installed_radiomics

    base = slicer.util.startupEnvironment() if in_slicer_application() else None
    return prefer_installed_radiomics(engine_environment(base))


def current_scene():
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


def node_name(node) -> str:
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


def set_ijk_to_ras(node, array: np.ndarray) -> None:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    node.SetIJKToRASMatrix(matrix)


def thin_axis(node) -> int:
    """The IJK axis (0 = I, 1 = J, 2 = K) along which a single-slice volume is one voxel thick."""
    image_data = node.GetImageData() if node is not None else None
    if image_data is None:
        raise Rad4XCNNError(f"volume '{node_name(node)}' holds no image data")
    dims = image_data.GetDimensions()
    if dims[2] == 1:
        return 2
    thin = [axis for axis in range(3) if dims[axis] == 1]
    if not thin:
        raise Rad4XCNNError(
            f"volume '{node_name(node)}' has {dims[2]} slices of {dims[0]}x{dims[1]}; "
            "Rad4XCNN works on 2D images (a single-slice volume)"
        )
    return thin[-1]


def slice_2d(array: np.ndarray, thin_axis: int) -> np.ndarray:
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
        raise Rad4XCNNError(f"expected a scalar or vector volume node, got {node_name(node)}")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise Rad4XCNNError(f"volume '{node.GetName()}' is a labelmap; choose the image, not its mask")
    thin = thin_axis(node)
    array = slice_2d(np.array(slicer.util.arrayFromVolume(node)), thin)
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
        node = current_scene().AddNewNodeByClass(node_class, name)
    elif name:
        node.SetName(name)
    set_ijk_to_ras(node, ijk_to_ras_from_image(image))
    slicer.util.updateVolumeFromArray(node, array[np.newaxis, ...])
    node.CreateDefaultDisplayNodes()
    return node


def volume_node_from_array(array: np.ndarray, like, name: str, node=None, node_class: str | None = None):
    """Put a 2D ``array`` into the scene in the geometry of the single-slice volume ``like``.

    The array must have the 2D shape of ``like`` (rows, columns); the new (or updated) node gets ``like``'s
    IJK-to-RAS matrix and slice orientation, so it overlays ``like`` voxel for voxel.
    """
    array = np.asarray(array)
    thin = thin_axis(like)
    expected = slice_2d(slicer.util.arrayFromVolume(like), thin).shape[:2]
    if array.shape[:2] != expected or array.ndim != 2:
        raise Rad4XCNNError(
            f"array of shape {array.shape} does not match the {expected[0]}x{expected[1]} (rows x columns) "
            f"pixel grid of '{like.GetName()}'"
        )
    if node is None:
        node = current_scene().AddNewNodeByClass(node_class or "vtkMRMLScalarVolumeNode", name)
    elif name:
        node.SetName(name)
    set_ijk_to_ras(node, ijk_to_ras_array(like))
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


# ------------------------------------------------------------------------------------------- volumes
def is_volume_3d(node) -> bool:
    """True for a volume with more than one voxel along each axis (a 3D volume, not a single slice)."""
    image_data = node.GetImageData() if node is not None else None
    if image_data is None:
        raise Rad4XCNNError(f"volume '{node_name(node)}' holds no image data")
    return min(image_data.GetDimensions()) > 1


def ijk_to_ras_from_volume(volume) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a :class:`~Rad4XCNNLogic.cohort.volumes.Volume` (LPS, SimpleITK's
    geometry) for Slicer (RAS)."""
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag([float(s) for s in volume.spacing])
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(volume.origin, dtype=float)
    return matrix


def volume_from_node(node):
    """A 3D scalar volume node as a grey :class:`~Rad4XCNNLogic.cohort.volumes.Volume` with its geometry
    (spacing, origin and direction in SimpleITK's LPS convention), as the engine reads the same NRRD.

    Examples
    --------
    >>> volume = volume_from_node(slicer.util.getNode("ct01"))  # doctest: +SKIP
    >>> volume.spacing  # doctest: +SKIP
    (0.8, 0.8, 2.5)
    """
    from Rad4XCNNLogic.cohort.volumes import Volume

    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise Rad4XCNNError(f"expected a scalar volume node, got {node_name(node)}")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise Rad4XCNNError(f"volume '{node.GetName()}' is a labelmap; choose the image, not its mask")
    components = node.GetImageData().GetNumberOfScalarComponents() if node.GetImageData() else 0
    if components != 1:
        raise Rad4XCNNError(
            f"volume '{node.GetName()}' has {components} components per voxel; a grey 3D volume is expected"
        )
    array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32)
    ijk_to_ras = ijk_to_ras_array(node)
    lps = LPS_TO_RAS @ ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = LPS_TO_RAS @ ijk_to_ras[:3, 3]
    return Volume(
        array,
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in origin),
        tuple(float(d) for d in direction.ravel()),
        {"node": node.GetName(), "ijk_to_ras": ijk_to_ras.tolist(), "components": 1},
    )


def volume_node_from_volume(volume, name: str, node=None, node_class: str = "vtkMRMLScalarVolumeNode"):
    """Put a :class:`~Rad4XCNNLogic.cohort.volumes.Volume` into the scene (a new node, or ``node`` updated)
    with its geometry."""
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise Rad4XCNNError(f"expected a 3D volume array, got shape {array.shape}")
    if node is None:
        node = current_scene().AddNewNodeByClass(node_class, name)
    elif name:
        node.SetName(name)
    set_ijk_to_ras(node, ijk_to_ras_from_volume(volume))
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    return node


def volume_node_like(array: np.ndarray, like, name: str, node=None, node_class: str | None = None):
    """Put ``array`` into the scene in the geometry of the volume ``like``: a 2D array on a single-slice
    volume (:func:`volume_node_from_array`), or a (slices, rows, columns) array on a 3D volume."""
    if not is_volume_3d(like):
        return volume_node_from_array(array, like, name, node=node, node_class=node_class)
    array = np.asarray(array)
    expected = tuple(slicer.util.arrayFromVolume(like).shape[:3])
    if array.shape != expected:
        raise Rad4XCNNError(
            f"array of shape {array.shape} does not match the {' x '.join(map(str, expected))} "
            f"(slices x rows x columns) voxel grid of '{like.GetName()}'"
        )
    if node is None:
        node = current_scene().AddNewNodeByClass(node_class or "vtkMRMLScalarVolumeNode", name)
    elif name:
        node.SetName(name)
    set_ijk_to_ras(node, ijk_to_ras_array(like))
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    return node


def read_map_array(path) -> np.ndarray:
    """A CAM or feature-map file as an array: 2D for a one-slice image, (slices, rows, columns) for a 3D
    volume (as the engine wrote it, in its image's geometry)."""
    from Rad4XCNNLogic.cohort.imageio import read_image
    from Rad4XCNNLogic.cohort.volumes import image_info, read_volume

    info = image_info(path)
    if info is not None and info[0] == 3:
        return read_volume(path).array
    return read_image(path).array
