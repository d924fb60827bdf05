"""Refresh the module's view of the scene once per change, not once per node while a scene loads.

Loading a scene (or a DICOM study, or a batch of nodes) adds many nodes one by one; refreshing the list of
image/segmentation pairs on each NodeAddedEvent rescans every segmentation each time. The watcher defers
node events while the scene imports, closes or runs a batch, and refreshes once when that ends
(vtkMRMLScene's StartImportEvent/EndImportEvent, Start/EndBatchProcessEvent and EndCloseEvent; checked
against Libs/MRML/Core/vtkMRMLScene.h at v5.10.0 and main).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class SceneWatcher:
    """Calls ``refresh()`` when nodes are added to or removed from ``scene``, at most once per import/batch.

    Parameters
    ----------
    scene : a ``vtkMRMLScene`` (Slicer's, or one made by ``bridge.headless_slicer()``).
    refresh : called without arguments.
    schedule : runs a callable later, once the current events are processed; the widget passes
        ``lambda f: qt.QTimer.singleShot(0, f)``, so that the clean-up a scene does right after an import
        (it removes superseded nodes) joins the same refresh. None: refresh at once (outside busy states).

    Examples
    --------
    >>> watcher = SceneWatcher(slicer.mrmlScene, widget.updateScenePairs)  # doctest: +SKIP
    >>> watcher.stop()  # in the widget's cleanup()  # doctest: +SKIP
    """

    def __init__(self, scene, refresh: Callable[[], object], schedule: Callable | None = None):
        self.scene = scene
        self.refresh = refresh
        self.schedule = schedule
        self.refreshes = 0
        self._pending = False
        self._scheduled = False
        self._tags: list[int] = []
        for event, handler in (
            (scene.NodeAddedEvent, self._on_node_event),
            (scene.NodeRemovedEvent, self._on_node_event),
            (scene.EndImportEvent, self._on_end),
            (scene.EndBatchProcessEvent, self._on_end),
            (scene.EndCloseEvent, self._on_end),
            (scene.EndRestoreEvent, self._on_end),
        ):
            self._tags.append(scene.AddObserver(event, handler))

    def _busy(self) -> bool:
        scene = self.scene
        return bool(
            scene.IsImporting() or scene.IsBatchProcessing() or scene.IsClosing() or scene.IsRestoring()
        )

    def _on_node_event(self, caller=None, event=None) -> None:
        self._pending = True
        self._request()

    def _on_end(self, caller=None, event=None) -> None:
        if self._pending:
            self._request()

    def _request(self) -> None:
        if self._busy():
            return  # the end of the import/batch/close asks again
        if self.schedule is None:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self.schedule(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._busy():
            return
        self._pending = False
        self.refreshes += 1
        self.refresh()

    def stop(self) -> None:
        """Remove the observers (call from the widget's ``cleanup``)."""
        for tag in self._tags:
            self.scene.RemoveObserver(tag)
        self._tags = []
