"""Scene life in Slicer on the slicer-core wheel: the CAM colours survive a closed scene, and loading a
scene refreshes the module's view once instead of once per node."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from Rad4XCNNLib import bridge as mb
from Rad4XCNNLib import masks, overlays
from Rad4XCNNLib.scenewatch import SceneWatcher

from Rad4XCNNLogic.cohort.imageio import Image2D


def _image_and_segmentation(name: str, shape=(24, 30)):
    volume = mb.volume_node_from_image(Image2D(np.zeros(shape, np.float32)), name)
    mask = np.zeros(shape, bool)
    mask[5:12, 6:15] = True
    return volume, masks.segmentation_from_mask(mask, volume, f"{name} segmentation")


def _heat_rgb(node, index):
    rgba = [0.0] * 4
    assert node.GetColor(index, rgba)
    return rgba[:3]


def test_cam_colours_survive_a_closed_scene():
    mb.headless_slicer()
    volume, _ = _image_and_segmentation("us")
    cam = np.outer(np.hanning(24), np.hanning(30))
    overlay = overlays.cam_overlay(cam, volume)
    colour = overlay.GetDisplayNode().GetColorNode()
    assert " " not in colour.GetID() and not colour.GetSingletonTag()
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(overlay)  # the CAM's colour legend
    assert (
        legend.GetTitleText().startswith("CAM") and legend.GetPrimaryDisplayNode() is overlay.GetDisplayNode()
    )
    assert overlays.cam_overlay(cam, volume, node=overlay) is overlay  # shown again: still one legend
    assert overlay.GetNumberOfDisplayNodes() == 2
    slicer.mrmlScene.Clear(0)  # File > Close Scene
    assert slicer.mrmlScene.GetNodesByName(overlays.HEAT_COLOUR_NAME).GetNumberOfItems() == 0
    volume, _ = _image_and_segmentation("us again")
    colour = overlays.cam_overlay(cam, volume).GetDisplayNode().GetColorNode()
    assert colour.GetNumberOfColors() == 256
    assert np.allclose(_heat_rgb(colour, 0), [0, 0, 0]) and np.allclose(_heat_rgb(colour, 255), [1, 1, 1])
    assert np.allclose(_heat_rgb(colour, 153), [1.0, 0.45, 0.0], atol=0.02)  # orange at 0.6


def test_a_heat_table_that_lost_its_colours_is_filled_again():
    mb.headless_slicer()
    colour = overlays.heat_colour_node()
    colour.SetNumberOfColors(2)  # as a reset (or an edit) leaves it
    colour.SetColor(1, "x", 0.0, 0.0, 1.0, 1.0)
    again = overlays.heat_colour_node()
    assert again is colour  # found, not duplicated
    assert colour.GetNumberOfColors() == 256 and np.allclose(_heat_rgb(colour, 255), [1, 1, 1])
    assert slicer.mrmlScene.GetNodesByName(overlays.HEAT_COLOUR_NAME).GetNumberOfItems() == 1


@pytest.fixture
def saved_scene(tmp_path):
    mb.headless_slicer()
    for k in range(5):
        _image_and_segmentation(f"case{k}")
    scene = slicer.mrmlScene
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    return tmp_path / "scene.mrml"


def test_importing_a_scene_refreshes_once(saved_scene):
    mb.headless_slicer()
    scene = slicer.mrmlScene
    queued, seen = [], []
    watcher = SceneWatcher(
        scene,
        lambda: seen.append(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")),
        schedule=queued.append,
    )
    added = []
    scene.AddObserver(scene.NodeAddedEvent, lambda caller, event: added.append(1))
    scene.SetURL(str(saved_scene))
    assert scene.Import()
    for callback in queued:  # what Qt's event loop does once the import has returned
        callback()
    assert len(added) >= 10  # ten nodes of ours, plus their display nodes
    assert seen == [5] and watcher.refreshes == 1  # one refresh, after the whole scene is there
    _image_and_segmentation("one more")
    for callback in queued[1:]:
        callback()
    assert seen == [5, 6]
    watcher.stop()
    _image_and_segmentation("unobserved")
    assert watcher.refreshes == 2 and len(queued) == 2


def test_a_batch_of_nodes_refreshes_once_without_an_event_loop():
    mb.headless_slicer()
    scene = slicer.mrmlScene
    seen = []
    watcher = SceneWatcher(scene, lambda: seen.append(len(masks.scene_image_segmentation_pairs())))
    scene.StartState(scene.BatchProcessState)
    for k in range(4):
        _image_and_segmentation(f"batch{k}")
    assert seen == []  # nothing while the batch runs
    scene.EndState(scene.BatchProcessState)
    assert seen == [4] and watcher.refreshes == 1
    _image_and_segmentation("single")  # outside a batch, each change refreshes at once
    assert watcher.refreshes > 1 and seen[-1] == 5
    watcher.stop()
