"""A background run and what it needs when it ends, held apart from the scene.

The module's parameter node belongs to the scene: File > Close Scene replaces it (its settings back to the
defaults, its node references gone), and with the module hidden the widget may hold none. A run started
before that must still end well, so the :class:`RunSession` keeps what the run was started with: the job,
the folder it writes, a copy of the settings and the parameter node of that moment. When the job ends,
:meth:`RunSession.finish` shows the results from the session's own folder on whichever parameter node is
current, and removes a case's temporary folder once its results are in the scene.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Rad4XCNNLib.background import BackgroundJob, engine_command
from Rad4XCNNLogic.errors import Rad4XCNNError

log = logging.getLogger(__name__)

KINDS = ("cohort", "case")


def node_in_scene(node, scene) -> bool:
    """True when ``node`` (a MRML node, or None) is still in ``scene`` (not removed, the scene not closed)."""
    return node is not None and scene is not None and node.GetScene() is scene and scene.IsNodePresent(node)


@dataclass
class RunSession:
    """One background run: ``kind`` "cohort" (``folder`` is the run folder) or "case" (``folder`` is the
    case's folder; ``temporary``: removed once shown), with the settings ``values`` it was started with."""

    kind: str
    job: BackgroundJob
    folder: Path
    values: Mapping[str, Any] = field(default_factory=dict)
    parameter_node: Any = None
    temporary: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        self.folder = Path(self.folder)
        self.values = dict(self.values)
        self._scene, self._tag = None, None
        if self.parameter_node is not None and self.parameter_node.GetScene() is not None:
            # Closing the scene resets the parameter node in place (a singleton outlives vtkMRMLScene::Clear,
            # Libs/MRML/Core/vtkMRMLScene.cxx at v5.10.0): from then on the copy made here is what counts.
            self._scene = self.parameter_node.GetScene()
            self._tag = self._scene.AddObserver(self._scene.StartCloseEvent, self._on_scene_close)

    def _on_scene_close(self, caller=None, event=None) -> None:
        self.parameter_node = None

    def _stop_watching(self) -> None:
        if self._scene is not None and self._tag is not None:
            self._scene.RemoveObserver(self._tag)
        self._scene, self._tag = None, None

    def settings_now(self, parameter_node) -> dict[str, Any]:
        """The settings to finish with: the current ones while the run's parameter node is still the current
        one (M may have moved meanwhile), else the copy made at the start; nodes that left the scene become
        None, and the output folder is always the run's."""
        from Rad4XCNNLib import parameters as settings

        same = parameter_node is not None and parameter_node is self.parameter_node
        values = settings.read_all(parameter_node) if same else dict(self.values)
        scene = parameter_node.GetScene() if parameter_node is not None else None
        for name, value in list(values.items()):
            is_node = settings.BY_NAME[name].kind == "node"
            if is_node and value is not None and not node_in_scene(value, scene):
                values[name] = None
        if self.kind == "cohort":
            values["OutputFolder"] = str(self.folder)
        return values

    def finish(self, parameter_node, results=None):
        """Show what the finished job wrote on ``parameter_node`` (the current one, maybe of a new scene).

        A cohort run's results are read from the session's folder, which becomes the node's output folder.
        A case is shown against ``results`` (the loaded cohort run; read from the case's run folder when
        None or another one). Returns ``(results, summary)``. The case's temporary folder is removed
        afterwards, unless its image left the scene (then the summary says where its files are).
        """
        from Rad4XCNNLib import parameters as settings
        from Rad4XCNNLib import results as mrml_results

        self._stop_watching()
        values = self.settings_now(parameter_node)
        if self.kind == "cohort":
            settings.set_value(parameter_node, "OutputFolder", str(self.folder))
            return mrml_results.load_and_show(self.folder, parameter_node, values["Threshold"])
        run_folder = values.get("OutputFolder") or ""
        if results is None or Path(results.folder).resolve() != Path(run_folder).resolve():
            results = mrml_results.load_run(run_folder, threshold=values["Threshold"])
        summary = mrml_results.show_case(results, parameter_node, self.folder, values)
        if values.get("CaseImage") is None:
            return results, summary + f"; the case's files are kept in {self.folder}"
        self.discard()
        return results, summary

    def discard(self) -> None:
        """Remove the folder of a temporary (case) session; a cohort's run folder is never removed."""
        self._stop_watching()
        if self.temporary and self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)
            log.debug("removed the case folder %s", self.folder)


# ----------------------------------------------------------------------------- before a run starts
def input_dims(values: Mapping[str, Any], kind: str = "cohort") -> int | None:
    """2 or 3: the dimensions of the images a ``kind`` run ("cohort" or "case") of the settings ``values``
    reads (the case's image, the scene's first image with a segmentation, or the manifest's first image,
    from its header); None when that is not known yet (nothing chosen, an unreadable file)."""
    from Rad4XCNNLib import bridge

    if kind == "case":
        node = values.get("CaseImage")
    elif values.get("CohortSource") == "scene":
        from Rad4XCNNLib import masks

        node = next((pair.volume for pair in masks.scene_image_segmentation_pairs()), None)
    else:
        return manifest_dims(values.get("ManifestPath") or "")
    return None if node is None else 3 if bridge.is_volume_3d(node) else 2


def manifest_dims(manifest: str | Path) -> int | None:
    """2 or 3: the dimensions of a manifest's first image, read from its header alone (the engine refuses a
    manifest that mixes them); None without a readable manifest or image."""
    from Rad4XCNNLogic.cohort.volumes import image_info

    path = Path(manifest)
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.DictReader(handle)
            rows.fieldnames = [str(name).strip().lower() for name in rows.fieldnames or ()]
            image = next((row["image"].strip() for row in rows if (row.get("image") or "").strip()), "")
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    info = image_info(path.resolve().parent / image) if image else None
    return info[0] if info else None


def check_model(values: Mapping[str, Any], kind: str = "cohort") -> None:
    """Stop in one line before a ``kind`` run starts when its network cannot run on its images: a native 3D
    network on 2D images or with ImageNet weights (parameters.model_problem)."""
    from Rad4XCNNLib import parameters as settings
    from Rad4XCNNLogic.features.volume_nets import is_volume_net

    if is_volume_net(values.get("Backbone")):  # a 2D network runs on either: no image is read for it
        settings.check_model(values, input_dims(values, kind))


def install_plan(group: str = "pipeline", values: Mapping[str, Any] | None = None, kind: str = "cohort"):
    """What to install before a ``kind`` run of the settings ``values`` (:func:`check_model` first): the
    packages of ``group`` and the optional ones its network needs (MONAI for a 3D network)."""
    from Rad4XCNNLib import dependencies

    if values is None:
        return dependencies.check(group)
    check_model(values, kind)
    return dependencies.check(group, extra=dependencies.extra_requirements(values.get("Backbone")))


def start_cohort_run(values: Mapping[str, Any], parameter_node=None, env=None) -> RunSession:
    """Start ``rad4xcnn run`` on the manifest (or on the scene's image/segmentation pairs, exported into the
    run folder) with the run configuration of the settings ``values``; the session keeps the folder."""
    from Rad4XCNNLib import parameters as settings

    if not values.get("OutputFolder"):
        raise Rad4XCNNError("choose an output folder")
    check_model(values, "cohort")
    out = Path(values["OutputFolder"])
    out.mkdir(parents=True, exist_ok=True)
    if values.get("CohortSource") == "scene":
        from Rad4XCNNLib import masks

        manifest = masks.export_scene_cohort(masks.scene_image_segmentation_pairs(), out / "scene_cohort")
    else:
        manifest = values.get("ManifestPath")
        if not manifest or not Path(manifest).is_file():
            raise Rad4XCNNError(f"manifest not found: {manifest or '(none chosen)'}")
    config = settings.write_run_configuration(values, manifest, out)
    job = BackgroundJob(engine_command("run", str(config)), env=env, cwd=out).start()
    return RunSession("cohort", job, out, values, parameter_node)


def start_case_run(values: Mapping[str, Any], parameter_node=None, env=None) -> RunSession:
    """Export the Case panel's image and lesion into a temporary folder and start ``rad4xcnn case`` there
    against the run folder; the folder is removed once the case is shown (or the run fails)."""
    from Rad4XCNNLib import results as mrml_results

    check_model(values, "case")
    folder = Path(tempfile.mkdtemp(prefix="rad4xcnn-case-"))
    try:
        argv = mrml_results.case_command(values, folder)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    job = BackgroundJob(engine_command(*argv), env=env, cwd=folder).start()
    return RunSession("case", job, folder, values, parameter_node, temporary=True)


def demo_command(folder: str | Path) -> tuple[list[str], Path]:
    """The engine arguments of the demo (``rad4xcnn demo``: writes the synthetic cohort into ``FOLDER/cohort``
    and runs the whole pipeline on it) and the run folder it fills (``FOLDER/run``)."""
    return ["demo", "--out", str(folder)], Path(folder) / "run"


def start_demo_run(folder, values: Mapping[str, Any], parameter_node=None, env=None) -> RunSession:
    """The panel's "Try the demo cohort": build the synthetic cohort and run it in the background; its
    results load as a cohort run's from ``FOLDER/run``, so a first try needs no manifest."""
    args, run_folder = demo_command(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    job = BackgroundJob(engine_command(*args), env=env, cwd=folder).start()
    return RunSession("cohort", job, run_folder, values, parameter_node)
