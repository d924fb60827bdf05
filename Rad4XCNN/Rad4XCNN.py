"""Rad4XCNN, the 3D Slicer module: explain a CNN's deep features through radiomic features.

This file is the thin GUI. The work is done by the engine package ``Rad4XCNNLogic`` (installed next to this
file): the MRML bridge and result views (``mrml_bridge``, ``mrml_results``), the settings on the parameter
node (``mrml_parameters``), the background process (``background``), the dependency check (``dependencies``)
and the self-test scenarios (``mrml_scenarios``), which the pytest suite also runs on the slicer-core wheel.
The engine package is imported under other names because this module's logic class is, by Slicer's
convention, called ``Rad4XCNNLogic`` too.
"""

import sys
import tempfile
from pathlib import Path

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # installed extension: the engine package lies next to this file
    import Rad4XCNNLogic as rad4xcnn_engine
except ImportError:  # source tree added as a module path: the engine is one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import Rad4XCNNLogic as rad4xcnn_engine
from Rad4XCNNLib import background, bridge, dependencies
from Rad4XCNNLib import parameters as settings

from Rad4XCNNLogic.errors import Rad4XCNNError

POLL_INTERVAL_MS = 250
THRESHOLD_DELAY_MS = 300
SELF_TEST_DEPENDENCIES = "pipeline"


#
# Rad4XCNN
#
class Rad4XCNN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Rad4XCNN"
        self.parent.categories = ["Informatics"]
        self.parent.dependencies = []
        self.parent.contributors = ["Rad4XCNN developers"]
        self.parent.helpText = (
            "Explain what a convolutional network has learnt: each deep feature is correlated (Spearman) "
            "with radiomic features whose meaning is known, and is explained by those with |rho| >= M. "
            "<b>Cohort</b>: run the analysis on a manifest or on the image/segmentation pairs of the scene. "
            "<b>Case</b>: see one image's CAM and its radiomic values against the cohort. "
            'See the <a href="https://github.com/rad4xcnn/Rad4XCNN#use-in-3d-slicer">documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Rad4XCNN implements the method of Prinzi F. et al., <i>Rad4XCNN: a new agnostic method for "
            "post-hoc global explanation of CNN-derived features by means of radiomics</i>, "
            "arXiv:2405.02334. "
            f"Engine version {rad4xcnn_engine.__version__}."
        )


#
# Rad4XCNNWidget
#
class Rad4XCNNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the widgets of Rad4XCNN.ui to the parameter node and calls the logic; holds no analysis code."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._job = None
        self._jobKind = None
        self._jobFolder = None
        self._timer = None
        self._thresholdTimer = None

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Rad4XCNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = Rad4XCNNLogic()

        self._bindParameterWidgets()
        self.ui.runButton.connect("clicked(bool)", self.onRunCohort)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.loadResultsButton.connect("clicked(bool)", self.onLoadResults)
        self.ui.caseRunButton.connect("clicked(bool)", self.onExplainCase)
        # Moving M re-thresholds the stored correlations once the slider rests for a moment.
        self._thresholdTimer = qt.QTimer()
        self._thresholdTimer.setSingleShot(True)
        self._thresholdTimer.setInterval(THRESHOLD_DELAY_MS)
        self._thresholdTimer.connect("timeout()", self.onThresholdChanged)
        self.ui.thresholdSliderWidget.connect(
            "valueChanged(double)", lambda _value: self._thresholdTimer.start()
        )
        self.ui.camOpacitySliderWidget.connect("valueChanged(double)", bridge.set_overlay_opacity)
        self.ui.caseMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._fillSegments)
        for button, reference in (
            (self.ui.showExplanationsButton, "ExplanationsTable"),
            (self.ui.showCorrelationsButton, "CorrelationsTable"),
            (self.ui.showClassificationButton, "ClassificationTable"),
            (self.ui.showCaseTableButton, "CaseTable"),
        ):
            button.connect(
                "clicked(bool)", lambda _=False, r=reference: self._showReferenced(r, bridge.show_table)
            )
        self.ui.showCoveragePlotButton.connect(
            "clicked(bool)", lambda _=False: self._showReferenced("CoverageChart", bridge.show_chart)
        )
        self.ui.showRhoPlotButton.connect(
            "clicked(bool)", lambda _=False: self._showReferenced("RhoChart", bridge.show_chart)
        )
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self._updateScenePairs)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self._updateScenePairs)
        self.initializeParameterNode()

    def _bindParameterWidgets(self):
        """Connect each widget named in settings.PARAMETERS: a change is stored on the parameter node."""
        for parameter in settings.PARAMETERS:
            if not parameter.widget:
                continue
            widget = getattr(self.ui, parameter.widget)
            store = lambda value, name=parameter.name: self._storeSetting(name, value)  # noqa: E731
            if parameter.kind == "node":
                widget.connect("currentNodeChanged(vtkMRMLNode*)", store)
            elif isinstance(widget, qt.QComboBox):
                if parameter.choices:
                    widget.clear()
                    widget.addItems(list(parameter.choices))
                widget.connect("currentTextChanged(QString)", store)
            elif parameter.kind == "path":
                widget.connect("currentPathChanged(QString)", store)
            elif parameter.kind == "float":
                # the range is the engine's rule for the setting (Parameter.of_setting), not the .ui file's
                if parameter.minimum is not None:
                    widget.minimum = parameter.minimum
                if parameter.maximum is not None:
                    widget.maximum = parameter.maximum
                widget.connect("valueChanged(double)", store)
            elif parameter.kind == "int":
                widget.connect("valueChanged(int)", store)
            elif parameter.kind == "bool":
                widget.connect("toggled(bool)", store)

    def _storeSetting(self, name, value):
        if self._updatingGUI or self._parameterNode is None:
            return
        try:
            settings.set_value(self._parameterNode, name, value)
        except Rad4XCNNError as error:
            self.ui.statusLabel.text = str(error)

    # ------------------------------------------------------------------------------ module and scene events
    def cleanup(self):
        self._stopJob()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode is not None:
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode
            )

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        node = self.logic.getParameterNode()
        if settings.get(node, "CaseImage") is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                settings.set_value(node, "CaseImage", first)
        self.setParameterNode(node)

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode
            )
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            values = settings.read_all(self._parameterNode)
            self._fillSegments(values["CaseMask"])
            for parameter in settings.PARAMETERS:
                if parameter.widget:
                    self._showSetting(getattr(self.ui, parameter.widget), parameter, values[parameter.name])
            self._updateStates(values)
        finally:
            self._updatingGUI = False
        self._updateScenePairs()

    @staticmethod
    def _showSetting(widget, parameter, value):
        wasBlocked = widget.blockSignals(True)
        try:
            if parameter.kind == "node":
                widget.setCurrentNode(value)
            elif isinstance(widget, qt.QComboBox):
                index = widget.findText(str(value))
                if index >= 0:
                    widget.currentIndex = index
                elif widget.editable:
                    widget.setEditText(str(value))
            elif parameter.kind == "path":
                widget.currentPath = value or ""
            elif parameter.kind in ("float", "int"):
                widget.value = value
            elif parameter.kind == "bool":
                widget.checked = bool(value)
        finally:
            widget.blockSignals(wasBlocked)

    def _updateStates(self, values):
        running = self._job is not None
        self.ui.weightsPathLineEdit.enabled = values["WeightsSource"] == "checkpoint"
        self.ui.manifestPathLineEdit.enabled = values["CohortSource"] == "manifest"
        self.ui.radiomicsParamsPathLineEdit.enabled = values["RadiomicsPreset"] == "file"
        mask = values["CaseMask"]
        self.ui.caseSegmentComboBox.enabled = mask is not None and mask.IsA("vtkMRMLSegmentationNode")
        self.ui.runButton.enabled = not running and bool(values["OutputFolder"])
        self.ui.cancelButton.enabled = running
        self.ui.loadResultsButton.enabled = not running and bool(values["OutputFolder"])
        self.ui.caseRunButton.enabled = not running and values["CaseImage"] is not None and mask is not None
        for button, reference in (
            (self.ui.showExplanationsButton, "ExplanationsTable"),
            (self.ui.showCorrelationsButton, "CorrelationsTable"),
            (self.ui.showClassificationButton, "ClassificationTable"),
            (self.ui.showCaseTableButton, "CaseTable"),
            (self.ui.showCoveragePlotButton, "CoverageChart"),
            (self.ui.showRhoPlotButton, "RhoChart"),
        ):
            button.enabled = values[reference] is not None
        folder = values["OutputFolder"]
        self.ui.openReportButton.enabled = bool(folder) and (Path(folder) / "report.html").is_file()

    def _fillSegments(self, maskNode=None):
        combo = self.ui.caseSegmentComboBox
        wasBlocked = combo.blockSignals(True)
        try:
            current = combo.currentText
            combo.clear()
            if maskNode is not None and maskNode.IsA("vtkMRMLSegmentationNode"):
                segmentation = maskNode.GetSegmentation()
                for i in range(segmentation.GetNumberOfSegments()):
                    combo.addItem(segmentation.GetNthSegment(i).GetName())
            index = combo.findText(current)
            combo.currentIndex = index if index >= 0 else 0
        finally:
            combo.blockSignals(wasBlocked)
        if not self._updatingGUI and self._parameterNode is not None:
            self._storeSetting("CaseSegment", combo.currentText)

    def _updateScenePairs(self, caller=None, event=None):
        pairs = bridge.scene_image_segmentation_pairs()
        names = ", ".join(pair.case_id for pair in pairs[:5]) + (", ..." if len(pairs) > 5 else "")
        self.ui.scenePairsLabel.text = (
            f"{len(pairs)} image(s) with a segmentation: {names}"
            if pairs
            else "no image with a segmentation in the scene"
        )

    # ------------------------------------------------------------------------------------------- actions
    def onRunCohort(self):
        values = settings.read_all(self._parameterNode)
        with slicer.util.tryWithErrorDisplay("Could not start the run."):
            if not self.logic.ensureDependencies("pipeline"):
                return
            job = self.logic.startCohortRun(values)
            self._startJob(job, "cohort", Path(values["OutputFolder"]))

    def onExplainCase(self):
        values = settings.read_all(self._parameterNode)
        with slicer.util.tryWithErrorDisplay("Could not explain this case."):
            if not self.logic.ensureDependencies("pipeline"):
                return
            job, caseFolder = self.logic.startCaseRun(values)
            self._startJob(job, "case", caseFolder)

    def onCancel(self):
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    def onLoadResults(self):
        with slicer.util.tryWithErrorDisplay("Could not load the results."):
            if not self.logic.ensureDependencies("module"):
                return
            with slicer.util.WaitCursor():
                self.ui.summaryLabel.text = self.logic.loadResults(self._parameterNode)

    def onThresholdChanged(self):
        if self._parameterNode is None or self.logic.results is None:
            return
        value = settings.get(self._parameterNode, "Threshold")
        with slicer.util.tryWithErrorDisplay("Could not apply the new M.", waitCursor=True):
            self.ui.summaryLabel.text = self.logic.applyThreshold(self._parameterNode, value)

    def onOpenReport(self):
        report = Path(settings.get(self._parameterNode, "OutputFolder")) / "report.html"
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(report)))

    def _showReferenced(self, reference, show):
        node = settings.get(self._parameterNode, reference)
        if node is not None:
            show(node)

    # ------------------------------------------------------------------------------------ background job
    def _startJob(self, job, kind, folder):
        self._job, self._jobKind, self._jobFolder = job, kind, folder
        self.ui.logTextEdit.clear()
        self.ui.progressBar.setRange(0, 0)  # busy until the first progress event
        self.ui.statusLabel.text = "Starting..."
        self._timer.start()
        self.updateGUIFromParameterNode()

    def _pollJob(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        job.poll()
        for line in job.take_new_lines():
            self.ui.logTextEdit.appendPlainText(line)
        fraction = job.progress.fraction
        if fraction is None:
            self.ui.progressBar.setRange(0, 0)
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = round(100 * fraction)
        self.ui.statusLabel.text = job.progress.text()
        if not job.running:
            self._finishJob(job)

    def _finishJob(self, job):
        kind, folder = self._jobKind, self._jobFolder
        self._stopJob()
        self.ui.progressBar.setRange(0, 100)
        if job.cancelled:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Cancelled. Finished work is kept and a new run resumes from it."
        elif not job.succeeded:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = f"Failed: {job.error_message()}"
            slicer.util.errorDisplay(
                f"The background process failed:\n{job.error_message()}", detailedText=job.log_text()
            )
        else:
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = "Finished."
            with slicer.util.tryWithErrorDisplay("Could not show the results.", waitCursor=True):
                if kind == "cohort":
                    self.ui.summaryLabel.text = self.logic.loadResults(self._parameterNode)
                else:
                    self.ui.summaryLabel.text = self.logic.showCase(self._parameterNode, folder)
        self.updateGUIFromParameterNode()

    def _stopJob(self):
        if self._timer is not None:
            self._timer.stop()
        if self._job is not None and self._job.running:
            self._job.cancel()
        self._job = self._jobKind = self._jobFolder = None


#
# Rad4XCNNLogic
#
class Rad4XCNNLogic(ScriptedLoadableModuleLogic):
    """Runs the engine for the widget (and for scripts): dependencies, background runs, results as nodes."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.results = None

    def getParameterNode(self):
        node = ScriptedLoadableModuleLogic.getParameterNode(self)
        settings.set_defaults(node)
        return node

    # ------------------------------------------------------------------------------------ dependencies
    def ensureDependencies(self, group="pipeline", askConfirmation=True):
        """Install what ``group`` needs after asking the user; True when everything is there."""
        plan = dependencies.check(group)
        if plan.empty:
            return True
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            plan.message(), "Rad4XCNN: Python packages"
        ):
            return False
        with slicer.util.WaitCursor():
            for step in plan.steps:
                if step.kind == "pytorch":
                    import PyTorchUtils

                    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                        askConfirmation=False,
                        torchVersionRequirement=step.version_of("torch"),
                        torchvisionVersionRequirement=step.version_of("torchvision"),
                    )
                    if torch is None:
                        raise RuntimeError("PyTorch could not be installed")
                else:
                    slicer.util.pip_install(list(step.requirements))
        still = dependencies.check(group)
        if not still.empty:
            slicer.util.errorDisplay(
                "Some packages are still missing: "
                + ", ".join(r.name for r in still.missing)
                + ". Restart Slicer and try again."
            )
            return False
        return True

    # ----------------------------------------------------------------------------------- background runs
    @staticmethod
    def _environment():
        return bridge.engine_process_environment()

    def startCohortRun(self, values):
        """Start ``rad4xcnn run`` on the manifest (or on the scene's image/segmentation pairs)."""
        out = Path(values["OutputFolder"] or "")
        if not values["OutputFolder"]:
            raise Rad4XCNNError("choose an output folder")
        out.mkdir(parents=True, exist_ok=True)
        if values["CohortSource"] == "scene":
            manifest = bridge.export_scene_cohort(
                bridge.scene_image_segmentation_pairs(), out / "scene_cohort"
            )
        else:
            manifest = values["ManifestPath"]
            if not manifest or not Path(manifest).is_file():
                raise Rad4XCNNError(f"manifest not found: {manifest or '(none chosen)'}")
        config = settings.write_run_configuration(values, manifest, out)
        argv = background.engine_command("run", str(config))
        return background.BackgroundJob(argv, env=self._environment(), cwd=out).start()

    def startCaseRun(self, values):
        """Export the chosen image and lesion; start the engine on this case against the run folder."""
        from Rad4XCNNLib import results as mrml_results

        caseFolder = Path(tempfile.mkdtemp(prefix="rad4xcnn-case-"))
        argv = mrml_results.case_command(values, caseFolder)
        job = background.BackgroundJob(
            background.engine_command(*argv), env=self._environment(), cwd=caseFolder
        ).start()
        return job, caseFolder

    # ------------------------------------------------------------------------------------------ results
    def loadResults(self, parameterNode):
        """Show the run folder's tables and plots; returns a one-line summary."""
        from Rad4XCNNLib import results as mrml_results

        results = mrml_results.load_run(settings.get(parameterNode, "OutputFolder"))
        self.results, summary = mrml_results.show_run(
            results, parameterNode, settings.get(parameterNode, "Threshold")
        )
        for reference, show in (
            ("ExplanationsTable", bridge.show_table),
            ("CoverageChart", bridge.show_chart),
        ):
            node = settings.get(parameterNode, reference)
            if node is not None:
                show(node)
        return summary

    def applyThreshold(self, parameterNode, threshold):
        """Re-threshold the loaded correlations at a new M (no recomputation); returns the new summary."""
        from Rad4XCNNLib import results as mrml_results

        self.results, summary = mrml_results.apply_threshold(self.results, parameterNode, threshold)
        return summary

    def showCase(self, parameterNode, caseFolder):
        """Show the case's CAM over its image and its radiomic values against the cohort."""
        from Rad4XCNNLib import results as mrml_results

        if self.results is None:
            self.loadResults(parameterNode)
        return mrml_results.show_case(self.results, parameterNode, caseFolder)


#
# Rad4XCNNTest
#
class Rad4XCNNTest(ScriptedLoadableModuleTest):
    """Runs the self-test scenarios of Rad4XCNNLib.scenarios in Slicer on a synthetic cohort.

    The same scenario functions run in the pytest suite on the slicer-core wheel
    (Testing/test_mrml_scenarios.py), so this test and CI check the same behaviour.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_Rad4XCNN_scenarios()
        self.setUp()
        self.test_Rad4XCNN_parameter_node()

    def test_Rad4XCNN_scenarios(self):
        from Rad4XCNNLib import scenarios as mrml_scenarios

        # The scenarios need the engine's packages; a fresh Slicer gets them here (no dialog in a test).
        self.assertTrue(Rad4XCNNLogic().ensureDependencies(SELF_TEST_DEPENDENCIES, askConfirmation=False))
        self.delayDisplay("Rad4XCNN self-test: synthetic cohort")
        with tempfile.TemporaryDirectory(prefix="rad4xcnn-selftest-") as folder:
            for name, outcome in mrml_scenarios.run_all(Path(folder)):
                self.delayDisplay(f"{name}: {outcome}", 200)
        self.delayDisplay("Rad4XCNN self-test passed")

    def test_Rad4XCNN_parameter_node(self):
        logic = Rad4XCNNLogic()
        node = logic.getParameterNode()
        self.assertEqual(settings.get(node, "Threshold"), 0.6)
        settings.set_value(node, "Threshold", 0.7)
        self.assertIs(logic.getParameterNode(), node)
        self.assertEqual(settings.get(node, "Threshold"), 0.7)
        with self.assertRaises(Rad4XCNNError):
            settings.set_value(node, "Threshold", 2.0)
