"""GUI test of the Rad4XCNN widget in 3D Slicer: widgets and the parameter node stay in step.

Run by ctest (``py_Rad4XCNNWidgetTest``) or from Slicer's Python console. The analysis behind the widget is
tested by Rad4XCNNTest and by the pytest suite on the slicer-core wheel.
"""

import unittest

import numpy as np
import slicer
from Rad4XCNNLib import bridge, dependencies, masks
from Rad4XCNNLib import parameters as settings

from Rad4XCNNLogic.cohort.imageio import Image2D


class Rad4XCNNWidgetTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()
        slicer.util.selectModule("Rad4XCNN")
        self.widget = slicer.util.getModuleWidget("Rad4XCNN")
        self.node = self.widget.logic.getParameterNode()

    def test_parameter_node_drives_the_widgets(self):
        settings.write_all(self.node, {"Threshold": 0.75, "CamMethod": "eigencam", "Backbone": "densenet121"})
        ui = self.widget.ui
        self.assertAlmostEqual(ui.thresholdSliderWidget.value, 0.75)
        self.assertEqual(ui.camMethodComboBox.currentText, "eigencam")
        self.assertEqual(ui.backboneComboBox.currentText, "densenet121")

    def test_widgets_drive_the_parameter_node(self):
        ui = self.widget.ui
        ui.thresholdSliderWidget.value = 0.8
        ui.deviceComboBox.currentIndex = ui.deviceComboBox.findText("cpu")
        self.assertAlmostEqual(settings.get(self.node, "Threshold"), 0.8)
        self.assertEqual(settings.get(self.node, "Device"), "cpu")

    def test_case_selectors_and_segments(self):
        volume = bridge.volume_node_from_image(Image2D(np.zeros((16, 20), np.float32)), "us")
        mask = np.zeros((16, 20), bool)
        mask[4:9, 5:12] = True
        segmentation = masks.segmentation_from_mask(mask, volume, "us segmentation")
        ui = self.widget.ui
        ui.caseImageSelector.setCurrentNode(volume)
        ui.caseMaskSelector.setCurrentNode(segmentation)
        self.assertIs(settings.get(self.node, "CaseImage"), volume)
        self.assertIs(settings.get(self.node, "CaseMask"), segmentation)
        self.assertEqual(ui.caseSegmentComboBox.currentText, "lesion")
        self.assertEqual(settings.get(self.node, "CaseSegment"), "lesion")
        self.assertIn("us", ui.scenePairsLabel.text)

    def test_run_and_explain_are_disabled_while_packages_install(self):
        ui = self.widget.ui
        settings.set_value(self.node, "OutputFolder", slicer.app.temporaryPath)
        self.assertTrue(ui.runButton.enabled)
        with dependencies.one_install_at_a_time():
            self.widget.updateGUIFromParameterNode()
            self.assertFalse(ui.runButton.enabled)
            self.assertFalse(ui.caseRunButton.enabled)
            self.assertFalse(ui.loadResultsButton.enabled)
        self.widget.updateGUIFromParameterNode()
        self.assertTrue(ui.runButton.enabled)

    def test_typed_backbone_keeps_its_cursor(self):
        ui = self.widget.ui
        ui.backboneComboBox.setEditText("resnet5")
        ui.backboneComboBox.lineEdit().cursorPosition = 3
        self.widget.updateGUIFromParameterNode()  # the stored value is the typed text: nothing rewritten
        self.assertEqual(ui.backboneComboBox.currentText, "resnet5")
        self.assertEqual(ui.backboneComboBox.lineEdit().cursorPosition, 3)

    def test_device_panel_lists_the_torch_set_up(self):
        ui = self.widget.ui
        ui.deviceCollapsibleButton.collapsed = False
        self.assertTrue(ui.deviceInfoLabel.text.startswith("PyTorch"))
        self.assertGreater(ui.torchBackendComboBox.count, 1)

    def test_stratify_and_the_packages_panel(self):
        ui = self.widget.ui
        ui.stratifyLineEdit.text = "label, scanner"
        self.assertEqual(settings.get(self.node, "Stratify"), ["label", "scanner"])
        settings.set_value(self.node, "Stratify", [])
        self.assertEqual(ui.stratifyLineEdit.text, "")
        ui.packagesCollapsibleButton.collapsed = False
        self.assertIn("pandas", ui.packagesLabel.text)
        self.assertTrue(ui.demoButton.enabled and ui.upgradePackagesButton.enabled)
