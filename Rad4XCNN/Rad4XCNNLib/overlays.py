"""Overlays: a CAM over its image as a foreground volume with the heat colour table, the opacity of the
slice views' foreground, and what each slice view shows.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer

from Rad4XCNNLib import bridge
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

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
    scene = bridge.current_scene()
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
    scene = bridge.current_scene()
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
    volume_rendering: bool = False,
):
    """Show a CAM over its image: a scalar volume in the image's geometry, heat colours, foreground layer.

    ``cam`` is a 2D array (or :class:`Image2D`) of the image's pixel grid, or for a 3D ``image_volume`` a
    (slices, rows, columns) array (or :class:`~Rad4XCNNLogic.cohort.volumes.Volume`) of its voxel grid;
    with ``volume_rendering`` (3D only) it is also rendered in the 3D view (:func:`show_volume_rendering`);
    with ``normalise`` it is scaled to
    [0, 1] (a constant map becomes zeros). The volume's window spans [0, 1] so colours mean the same across
    cases and methods. Every slice view gets ``image_volume`` as background and the CAM as foreground at
    ``opacity``. Returns the CAM volume node (new, or ``node`` refilled).

    Examples
    --------
    >>> overlay = cam_overlay(gradcam, slicer.util.getNode("case001"), opacity=0.4)  # doctest: +SKIP
    """
    array = np.asarray(getattr(cam, "array", cam), dtype=np.float32)
    if not np.isfinite(array).all():
        raise Rad4XCNNError("the CAM holds NaN or infinite values")
    if not 0.0 <= float(opacity) <= 1.0:
        raise Rad4XCNNError(f"opacity must be between 0 and 1, got {opacity}")
    if normalise:
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    name = name or f"{image_volume.GetName()} CAM"
    node = bridge.volume_node_like(array, image_volume, name, node=node)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(colour_node(colour).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetInterpolate(True)
    node.SetAttribute(bridge.ROLE_ATTRIBUTE, "cam")
    colour_legend(node, "CAM (0: none, 1: most)")
    slicer.util.setSliceViewerLayers(
        background=image_volume, foreground=node, foregroundOpacity=float(opacity)
    )
    if volume_rendering:
        show_volume_rendering(node)
    return node


def volume_rendering_logic():
    """Slicer's Volume Rendering module logic; a one-line error where this Slicer has none."""
    module = getattr(getattr(slicer, "modules", None), "volumerendering", None)
    if module is None:
        raise Rad4XCNNError(
            "volume rendering is not available (this Slicer has no Volume Rendering module); "
            "the map is shown in the slice views only"
        )
    return module.logic()


def show_volume_rendering(node, max_opacity: float = 0.6):
    """Render a 3D map volume in the 3D view with its own colours: the volume's colour table and window
    (copied from its slice display), transparent in the lowest fifth of the window, rising to
    ``max_opacity`` at its top. Returns the volume rendering display node (made once per volume)."""
    if not bridge.is_volume_3d(node):
        raise Rad4XCNNError(f"'{node.GetName()}' is a single slice; volume rendering is for 3D volumes")
    logic = volume_rendering_logic()
    display = logic.GetFirstVolumeRenderingDisplayNode(node) or logic.CreateDefaultVolumeRenderingNodes(node)
    if display is None or display.GetVolumePropertyNode() is None:
        raise Rad4XCNNError(f"Slicer could not set up the volume rendering of '{node.GetName()}'")
    scalar = node.GetDisplayNode()
    logic.CopyScalarDisplayToVolumeRenderingDisplayNode(display, scalar)
    low, high = float(scalar.GetWindowLevelMin()), float(scalar.GetWindowLevelMax())
    opacity = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    opacity.RemoveAllPoints()
    opacity.AddPoint(low, 0.0)
    opacity.AddPoint(low + 0.2 * (high - low), 0.0)
    opacity.AddPoint(high, float(max_opacity))
    display.SetVisibility(True)
    return display


def colour_legend(volume, title: str):
    """Show the colour legend of ``volume``'s colour table in the slice views (Slicer's default legend,
    vtkSlicerColorLogic::AddDefaultColorLegendDisplayNode at v5.10.0, added once per volume), titled
    ``title``; returns the legend's display node."""
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume)
    if legend is None:
        raise Rad4XCNNError(f"Slicer could not add a colour legend to '{volume.GetName()}'")
    legend.SetTitleText(title)
    legend.SetVisibility(True)
    return legend


def set_overlay_opacity(opacity: float) -> None:
    """Set the foreground opacity of every slice view (the CAM slider)."""
    slicer.util.setSliceViewerLayers(foregroundOpacity=float(opacity))


def slice_layers() -> list[dict]:
    """Background, foreground and foreground opacity of every slice view (to check what is shown)."""
    scene = bridge.current_scene()
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
