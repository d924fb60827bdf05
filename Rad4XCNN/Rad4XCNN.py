"""Rad4XCNN, the 3D Slicer module: explain a CNN's deep features through radiomic features.

This file is the thin GUI. The work is done by the engine package ``Rad4XCNNLogic`` (installed next to this
file, imported under another name: by Slicer's convention this module's logic class is ``Rad4XCNNLogic``)
and by the Slicer-side helpers of ``Rad4XCNNLib`` (docs/ARCHITECTURE.md lists them), which the pytest suite
runs on the slicer-core wheel. At Slicer's start only the light helpers load (Slicer's own packages).

Supported: 3D Slicer 5.10 and later. On an older Slicer only ``Rad4XCNNLib.compatibility`` is imported (it
is written for Python 3.9), and the module shows why it cannot run.
"""

import logging
import sys
import tempfile
from pathlib import Path

import qt
import slicer
import vtk
from Rad4XCNNLib import compatibility
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# translatable strings, as in Slicer's module template (v5.10.0), untranslated on a Slicer without them
_, translate = compatibility.translation_functions()
#: Why this Slicer cannot run the module (None: it can). Checked before the engine is imported.
UNSUPPORTED = compatibility.slicer_version_problem(compatibility.running_slicer_version())
if UNSUPPORTED is None:
    try:  # installed extension: the engine package lies next to this file
        import Rad4XCNNLogic as rad4xcnn_engine
    except ImportError:  # source tree added as a module path: the engine is one folder up
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import Rad4XCNNLogic as rad4xcnn_engine
    # light helpers only: the MRML and result modules come with the panel or a run (numpy, pandas)
    from Rad4XCNNLib import background, dependencies, device, guistate, scenewatch, session
    from Rad4XCNNLib import parameters as settings

    from Rad4XCNNLogic.errors import Rad4XCNNError
else:
    logging.warning(UNSUPPORTED)
    Rad4XCNNError = RuntimeError

POLL_INTERVAL_MS = 250
THRESHOLD_DELAY_MS = 300
#: An estimated CPU run longer than this (seconds) is confirmed before it starts.
CONFIRM_RUN_SECONDS = 600


#
# Rad4XCNN
#
class Rad4XCNN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Rad4XCNN")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Informatics")]
        self.parent.dependencies = []
        self.parent.contributors = ["Rad4XCNN developers"]
        self.parent.helpText = _(
            "Explain what a convolutional network has learnt: each deep feature is correlated (Spearman) "
            "with radiomic features whose meaning is known, and is explained by those with |rho| >= M. "
            "<b>Cohort</b>: run the analysis on a manifest or on the image/segmentation pairs of the scene. "
            "<b>Case</b>: see one image's CAM and its radiomic values against the cohort. "
            "<b>Device</b>: the PyTorch build, GPUs, and a time estimate for a CPU run. "
            "Needs 3D Slicer 5.10 or later. "
            'See the <a href="https://github.com/rad4xcnn/Rad4XCNN#use-in-3d-slicer">documentation</a>.'
        )
        if UNSUPPORTED:
            self.parent.helpText = f"<b>{UNSUPPORTED}</b><br>" + self.parent.helpText
        self.parent.acknowledgementText = _(
            "Rad4XCNN implements the method of Prinzi F. et al., <i>Rad4XCNN: a new agnostic method for "
            "post-hoc global explanation of CNN-derived features by means of radiomics</i>, "
            "arXiv:2405.02334. "
        )
        if not UNSUPPORTED:  # the synthetic case and cohort in the SampleData module, once Slicer has started
            version = _("Engine version {version}.").format(version=rad4xcnn_engine.__version__)
            self.parent.acknowledgementText += version
            if hasattr(slicer.app, "connect"):  # a stand-in application (import checks) emits no signals
                slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the synthetic case and cohort (Rad4XCNNLib.sampledata) with the SampleData module:
    SampleDataLogic.registerCustomSampleDataSource with a customDownloader (SampleData.py at v5.10.0)."""
    import SampleData
    from Rad4XCNNLib import sampledata

    icon = Path(__file__).resolve().parent / "Resources" / "Icons" / "Rad4XCNN.png"
    sampledata.register(SampleData.SampleDataLogic.registerCustomSampleDataSource, icon)


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
        self._session = None
        self._timer = None
        self._thresholdTimer = None
        self._sceneWatcher = None

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        if UNSUPPORTED:  # one clear message instead of a failure at the first click
            label = qt.QLabel(UNSUPPORTED)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        from Rad4XCNNLib import mapviews, overlays, plots, tables

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Rad4XCNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = Rad4XCNNLogic()

        self._bindParameterWidgets()
        self.ui.runButton.connect("clicked(bool)", self.onRunCohort)
        self.ui.demoButton.connect("clicked(bool)", self.onTryDemo)
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
        self.ui.camOpacitySliderWidget.connect("valueChanged(double)", overlays.set_overlay_opacity)
        # a new colour map recolours the feature maps already shown (and is stored for the next case)
        recolour = lambda colour: colour and mapviews.recolour_feature_maps(str(colour))  # noqa: E731
        self.ui.featureMapColourComboBox.connect("currentTextChanged(QString)", recolour)
        self.ui.caseMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._fillSegments)
        for button, reference in (
            (self.ui.showExplanationsButton, "ExplanationsTable"),
            (self.ui.showCorrelationsButton, "CorrelationsTable"),
            (self.ui.showClassificationButton, "ClassificationTable"),
            (self.ui.showCaseTableButton, "CaseTable"),
        ):
            button.connect(
                "clicked(bool)", lambda _=False, r=reference: self._showReferenced(r, tables.show_table)
            )
        self.ui.showCoveragePlotButton.connect(
            "clicked(bool)", lambda _=False: self._showReferenced("CoverageChart", plots.show_chart)
        )
        self.ui.showRhoPlotButton.connect(
            "clicked(bool)", lambda _=False: self._showReferenced("RhoChart", plots.show_chart)
        )
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)
        self.ui.torchBackendComboBox.addItems(list(device.SUGGESTED_BACKENDS))
        self.ui.reinstallTorchButton.connect("clicked(bool)", self.onReinstallTorch)
        self.ui.estimateButton.connect("clicked(bool)", self.onEstimate)
        self.ui.deviceCollapsibleButton.connect("contentsCollapsed(bool)", self.onDevicePanel)
        self.ui.packagesCollapsibleButton.connect("contentsCollapsed(bool)", self.onPackagesPanel)
        self.ui.upgradePackagesButton.connect("clicked(bool)", self.onUpgradePackages)

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)
        # Quitting Slicer ends the background run's whole process tree (QCoreApplication::aboutToQuit);
        # background.py also registers the same with atexit, for a Python that is finalised without it.
        slicer.app.connect("aboutToQuit()", background.end_all_jobs)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # one refresh per scene load or batch, not one per node (and after Qt has processed the events)
        self._sceneWatcher = scenewatch.SceneWatcher(
            slicer.mrmlScene, self._updateScenePairs, schedule=lambda f: qt.QTimer.singleShot(0, f)
        )
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
            elif parameter.kind == "list":
                widget.connect("textChanged(QString)", store)

    def _storeSetting(self, name, value):
        if self._updatingGUI or self._parameterNode is None:
            return
        try:
            settings.set_value(self._parameterNode, name, value)
        except Rad4XCNNError as error:
            self.ui.statusLabel.text = str(error)

    # ------------------------------------------------------------------------------ module and scene events
    def cleanup(self):
        if UNSUPPORTED:
            return
        self._stopJob()
        if self._sceneWatcher is not None:
            self._sceneWatcher.stop()
        self.removeObservers()

    def enter(self):
        if not UNSUPPORTED:
            self.initializeParameterNode()

    def exit(self):
        if not UNSUPPORTED and self._parameterNode is not None:
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
                # an unchanged text is left alone: rewriting it moves the cursor while the user types
                text = guistate.text_to_show(widget.currentText, value)
                index = widget.findText(str(value))
                if text is not None and index >= 0:
                    widget.currentIndex = index
                elif text is not None and widget.editable:
                    widget.setEditText(text)
            elif parameter.kind == "path":
                text = guistate.text_to_show(widget.currentPath, value)
                if text is not None:
                    widget.currentPath = text
            elif parameter.kind in ("float", "int"):
                widget.value = value
            elif parameter.kind == "bool":
                widget.checked = bool(value)
            elif parameter.kind == "list" and (text := guistate.text_to_show(widget.text, value)) is not None:
                widget.text = text
        finally:
            widget.blockSignals(wasBlocked)

    def _updateStates(self, values):
        states = guistate.enabled_states(
            values, running=self._session is not None, installing=dependencies.install_in_progress()
        )
        for name, enabled in states.items():
            getattr(self.ui, name).enabled = enabled

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
        from Rad4XCNNLib import masks

        names = [pair.case_id for pair in masks.scene_image_segmentation_pairs()]
        self.ui.scenePairsLabel.text = guistate.scene_pairs_text(names)

    # ------------------------------------------------------------------------------------------- actions
    def onRunCohort(self):
        values = settings.read_all(self._parameterNode)
        with slicer.util.tryWithErrorDisplay(_("Could not start the run.")):
            if not self._ensure("pipeline", values=values) or not self.logic.ensureRadiomics():
                return
            with slicer.util.WaitCursor():
                estimate = self.logic.cpuEstimate(values)
            if estimate is not None:
                self.ui.estimateLabel.text = estimate.text()
                if estimate.total > CONFIRM_RUN_SECONDS and not slicer.util.confirmOkCancelDisplay(
                    _("Runs use the CPU: {estimate}. Start?").format(estimate=estimate.text()), "Rad4XCNN"
                ):
                    return
            self._startJob(self.logic.startCohortRun(values, self._parameterNode))

    def onTryDemo(self):
        """Build the synthetic cohort and run it (``rad4xcnn demo``) into the output folder, or into a
        "Rad4XCNN demo" folder of Slicer's temporary path (qSlicerCoreApplication::temporaryPath, v5.10.0)."""
        values = settings.read_all(self._parameterNode)
        folder = Path(values["OutputFolder"] or Path(slicer.app.temporaryPath) / "Rad4XCNN demo")
        with slicer.util.tryWithErrorDisplay(_("Could not start the demo.")):
            if self._ensure("pipeline"):
                environment = self.logic.environment()
                self._startJob(session.start_demo_run(folder, values, self._parameterNode, environment))

    def onReload(self):
        """Reload Rad4XCNNLib's modules too: Slicer's Reload reloads only this file
        (ScriptedLoadableModuleWidget.onReload, Base/Python/slicer/ScriptedLoadableModule.py at v5.10.0)."""
        import Rad4XCNNLib

        Rad4XCNNLib.reload_library()
        ScriptedLoadableModuleWidget.onReload(self)

    def onExplainCase(self):
        values = settings.read_all(self._parameterNode)
        with slicer.util.tryWithErrorDisplay(_("Could not explain this case.")):
            if not self._ensure("pipeline", values=values, kind="case"):
                return
            self._startJob(self.logic.startCaseRun(values, self._parameterNode))

    def onCancel(self):
        if self._session is not None:
            self._session.job.cancel()
            self.ui.statusLabel.text = _("Cancelling...")

    def onLoadResults(self):
        with slicer.util.tryWithErrorDisplay(_("Could not load the results.")):
            if not self._ensure("module"):
                return
            with slicer.util.WaitCursor():
                self.ui.summaryLabel.text = self.logic.loadResults(self._parameterNode)

    def onThresholdChanged(self):
        # no result nodes: nothing to re-threshold (a loaded scene's are re-read: results.apply_threshold)
        if self._parameterNode is None or settings.get(self._parameterNode, "ExplanationsTable") is None:
            return
        value = settings.get(self._parameterNode, "Threshold")
        with slicer.util.tryWithErrorDisplay(_("Could not apply the new M."), waitCursor=True):
            self.ui.summaryLabel.text = self.logic.applyThreshold(self._parameterNode, value)

    def _ensure(self, group, **run):
        """Install what ``group`` and the ``run`` need (after asking), with Run, Explain and Load disabled."""
        try:
            return self.logic.ensureDependencies(group, onStart=self.updateGUIFromParameterNode, **run)
        finally:
            self.updateGUIFromParameterNode()

    def onDevicePanel(self, collapsed=False):
        if collapsed:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not read the PyTorch set-up."), waitCursor=True):
            requested, environment = settings.get(self._parameterNode, "Device"), self.logic.environment()
            report = device.torch_report_in_child(requested, env=environment, idle=slicer.app.processEvents)
            self.ui.deviceInfoLabel.text = "\n".join(report.lines())

    def onPackagesPanel(self, collapsed=False):
        if not collapsed:  # the packages Rad4XCNN uses: the versions it needs, those installed
            self.ui.packagesLabel.text = "\n".join(row.text() for row in dependencies.package_rows())

    def onUpgradePackages(self):
        if slicer.util.confirmOkCancelDisplay(_("Install what is missing and upgrade Rad4XCNN's packages?")):
            with slicer.util.tryWithErrorDisplay(_("Could not upgrade the packages."), waitCursor=True):
                plan = dependencies.upgrade_plan(dependencies.package_rows())
                self.logic.runPlan(plan, onStart=self.updateGUIFromParameterNode)
                slicer.util.infoDisplay(_("Done. Restart Slicer to use the new packages."))
        self.onPackagesPanel()
        self.updateGUIFromParameterNode()

    def onReinstallTorch(self):
        backend = self.ui.torchBackendComboBox.currentText
        if not slicer.util.confirmOkCancelDisplay(device.reinstall_question(backend), "Rad4XCNN: PyTorch"):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not reinstall PyTorch."), waitCursor=True):
            self.logic.reinstallTorch(backend, onStart=self.updateGUIFromParameterNode)
            slicer.util.infoDisplay(_("PyTorch was reinstalled. Restart Slicer to use it."))
        self.updateGUIFromParameterNode()

    def onEstimate(self):
        values = settings.read_all(self._parameterNode)
        with slicer.util.tryWithErrorDisplay(_("Could not estimate the run time."), waitCursor=True):
            if not self._ensure("pipeline", values=values):
                return
            self.ui.estimateLabel.text = self.logic.cpuEstimate(values, cpuOnly=False).text()

    def onOpenReport(self):
        report = Path(settings.get(self._parameterNode, "OutputFolder")) / "report.html"
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(report)))

    def _showReferenced(self, reference, show):
        node = settings.get(self._parameterNode, reference)
        if node is not None:
            show(node)

    # ------------------------------------------------------------------------------------ background job
    def _startJob(self, runSession):
        self._session = runSession
        self.ui.logTextEdit.clear()
        self.ui.progressBar.setRange(0, 0)  # busy until the first progress event
        self.ui.statusLabel.text = _("Starting...")
        self._timer.start()
        self.updateGUIFromParameterNode()

    def _pollJob(self):
        if self._session is None:
            self._timer.stop()
            return
        job = self._session.job
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
            self._finishJob(self._session)

    def _finishJob(self, runSession):
        job = runSession.job
        self._stopJob()
        self.ui.progressBar.setRange(0, 100)
        if job.cancelled:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled. Finished work is kept and a new run resumes from it.")
            runSession.discard()
        elif not job.succeeded:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Failed: {problem}").format(problem=job.error_message())
            runSession.discard()
            slicer.util.errorDisplay(
                f"The background process failed:\n{job.error_message()}", detailedText=job.log_text()
            )
        else:
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = _("Finished.")
            # the scene may have been closed meanwhile, or the module hidden: the current parameter node
            # (a new one after a close) receives the results, read from the session's own folder
            parameterNode = self._parameterNode or self.logic.getParameterNode()
            with slicer.util.tryWithErrorDisplay(_("Could not show the results."), waitCursor=True):
                self.ui.summaryLabel.text = self.logic.finishRun(runSession, parameterNode)
        self.updateGUIFromParameterNode()

    def _stopJob(self):
        if self._timer is not None:
            self._timer.stop()
        if self._session is not None and self._session.job.running:
            self._session.job.cancel()
        self._session = None


#
# Rad4XCNNLogic
#
class Rad4XCNNLogic(ScriptedLoadableModuleLogic):
    """Runs the engine for the widget (and for scripts): dependencies, background runs, results as nodes."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.results = None
        self.rates = None
        self.radiomicsCheck = None

    def getParameterNode(self):
        node = ScriptedLoadableModuleLogic.getParameterNode(self)
        settings.set_defaults(node)
        return node

    # ------------------------------------------------------------------------------------ dependencies
    def ensureDependencies(
        self, group="pipeline", askConfirmation=True, inTesting=False, onStart=None, **run
    ):
        """Install what ``group`` and the ``run`` (its settings ``values`` and ``kind``: session.install_plan,
        which checks its network first) need after asking the user; True when everything is there. Nothing is
        installed while Slicer runs its tests (``slicer.app.testingEnabled()``, a static method added by
        Base/QTCore/qSlicerBaseQTCorePythonQtDecorators.h at v5.10.0), unless ``inTesting``."""
        plan = session.install_plan(group, **run)
        if plan.empty:
            return True
        torchMissing = any(r.source == "pytorch" for r in plan.missing)
        problem = compatibility.platform_problem() if torchMissing else None
        if problem:
            slicer.util.errorDisplay(problem)
            return False
        if slicer.app.testingEnabled() and not inTesting:
            logging.info("Rad4XCNN: testing, so nothing is installed; missing: %s", plan.missing)
            return False
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            plan.message(), "Rad4XCNN: Python packages"
        ):
            return False
        self.runPlan(plan, onStart)
        still = session.install_plan(group, **run)
        if not still.empty:
            slicer.util.errorDisplay(
                "Some packages are still missing: "
                + ", ".join(r.name for r in still.missing)
                + ". Restart Slicer and try again."
            )
            return False
        return True

    @staticmethod
    def runPlan(plan, onStart=None):
        with tempfile.TemporaryDirectory(prefix="rad4xcnn-install-") as folder:
            if onStart is not None:
                qt.QTimer.singleShot(0, onStart)  # greys out Run and Explain once the install holds its lock
            with slicer.util.WaitCursor():
                dependencies.run_plan(plan, folder, slicer, dependencies.install_torch_with_extension)

    def ensureRadiomics(self):
        """Check, once per session, the PyRadiomics that the runs import (in a child process started as the
        runs are); offer pyradiomics-bhklab when it differs, and make sure the runs import it afterwards."""
        from Rad4XCNNLib import radiomics_check

        if self.radiomicsCheck is None:
            self.radiomicsCheck = radiomics_check.check_in_engine_process(
                self.environment(), idle=slicer.app.processEvents
            )
            logging.info("Rad4XCNN: %s", self.radiomicsCheck.message())
        if self.radiomicsCheck.accepted:
            return True
        if slicer.app.testingEnabled() or not slicer.util.confirmYesNoDisplay(
            self.radiomicsCheck.message() + " Install it now?", "Rad4XCNN: PyRadiomics"
        ):
            return slicer.util.confirmOkCancelDisplay(_("Run with the installed PyRadiomics anyway?"))
        self.runPlan(radiomics_check.radiomics_install_plan())
        self.radiomicsCheck = None  # the runs are new processes: the next check sees the new install
        wanted = radiomics_check.installed_location()
        imported = radiomics_check.imported_by_engine(self.environment()).get("location")
        if wanted is None or imported != str(wanted):
            slicer.util.errorDisplay(radiomics_check.shadowed_message(wanted, imported))
            return False
        return self.ensureRadiomics()

    def reinstallTorch(self, backend, onStart=None):
        """Reinstall torch for ``backend`` ("automatic", "cpu", "cu121", ...) with the PyTorch extension."""
        import PyTorchUtils

        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if onStart is not None:
            qt.QTimer.singleShot(0, onStart)
        return device.reinstall_torch(backend, torchLogic.uninstallTorch, torchLogic.installTorch)

    def cpuEstimate(self, values, cpuOnly=True):
        """The run's time on the CPU (device.cpu_estimate: torch only in a child process, Slicer's events
        processed meanwhile); None when ``cpuOnly`` and the run will use a GPU."""
        from Rad4XCNNLib import masks

        cases = len(masks.scene_image_segmentation_pairs()) if values["CohortSource"] == "scene" else None
        estimate, self.rates = device.cpu_estimate(
            values, cases, self.rates, cpuOnly, env=self.environment(), idle=slicer.app.processEvents
        )
        return estimate

    # ----------------------------------------------------------------------------------- background runs
    @staticmethod
    def environment():
        """The environment of the background processes (engine runs, the PyTorch and PyRadiomics checks)."""
        from Rad4XCNNLib import bridge

        return bridge.engine_process_environment()

    def startCohortRun(self, values, parameterNode=None):
        """Start ``rad4xcnn run`` on the manifest or the scene's pairs (session.start_cohort_run)."""
        return session.start_cohort_run(values, parameterNode, self.environment())

    def startCaseRun(self, values, parameterNode=None):
        """Start ``rad4xcnn case`` on the Case panel's image and lesion (session.start_case_run)."""
        return session.start_case_run(values, parameterNode, self.environment())

    def finishRun(self, runSession, parameterNode):
        """Show a finished run's results on ``parameterNode``; returns the one-line summary."""
        self.results, summary = runSession.finish(parameterNode, self.results)
        return summary

    # ------------------------------------------------------------------------------------------ results
    def loadResults(self, parameterNode):
        """Show the run folder's tables and plots; returns a one-line summary."""
        from Rad4XCNNLib import results as mrml_results

        folder, threshold = (
            settings.get(parameterNode, "OutputFolder"),
            settings.get(parameterNode, "Threshold"),
        )
        self.results, summary = mrml_results.load_and_show(folder, parameterNode, threshold)
        return summary

    def applyThreshold(self, parameterNode, threshold):
        """Re-threshold the loaded correlations at a new M (no recomputation); returns the new summary."""
        from Rad4XCNNLib import results as mrml_results

        self.results, summary = mrml_results.apply_threshold(self.results, parameterNode, threshold)
        return summary


#
# Rad4XCNNTest
#
class Rad4XCNNTest(ScriptedLoadableModuleTest):
    """Runs the self-test scenarios of Rad4XCNNLib.scenarios in Slicer on a synthetic cohort.

    By default it installs nothing and takes about a minute (fit for the extension build machines): the
    MRML scenarios, plus a tiny engine run when the engine's packages are already installed. With
    ``RAD4XCNN_FULL_SELFTEST=1`` in the environment it installs what is missing and runs every scenario.
    The same scenario functions run in the pytest suite on the slicer-core wheel
    (Testing/slicer_side/test_scenarios.py), so this test and CI check the same behaviour.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        if UNSUPPORTED:
            self.delayDisplay(f"Rad4XCNN self-test skipped: {UNSUPPORTED}")
            return
        self.setUp()
        self.test_Rad4XCNN_scenarios()  # the parameter node's rules are one of its scenarios

    def test_Rad4XCNN_scenarios(self):
        from Rad4XCNNLib import scenarios as mrml_scenarios

        full = mrml_scenarios.full_self_test_requested()
        if full:  # the opt-in full run may install (network, GBs); the default never does
            self.assertTrue(
                Rad4XCNNLogic().ensureDependencies("pipeline", askConfirmation=False, inTesting=True)
            )
        mrml_scenarios.wait_idle = slicer.app.processEvents  # the GUI keeps responding while engines run
        self.delayDisplay(f"Rad4XCNN self-test ({'full' if full else 'default'}): synthetic cohort")
        with tempfile.TemporaryDirectory(prefix="rad4xcnn-selftest-") as folder:
            run = mrml_scenarios.run_all if full else mrml_scenarios.run_default
            for name, outcome in run(Path(folder)):
                self.delayDisplay(f"{name}: {outcome}", 200)
        self.delayDisplay("Rad4XCNN self-test passed")
