"""Render a layout preview of the Rad4XCNN module panel from ``Rad4XCNN.ui`` (no 3D Slicer needed).

3D Slicer cannot run where this project is built, so the README's figure is rendered from the module's .ui
file with plain Qt: Slicer/CTK widgets are stood in by their nearest Qt classes (ctkCollapsibleButton by a
group box, qMRMLNodeComboBox by a combo box, ctkPathLineEdit by a line edit, ctkSliderWidget by a slider with
a spin box) and filled with example values. It is a layout preview, not a screenshot of Slicer.

PySide6 is not a project dependency; use a throwaway environment:

    python3 -m venv /tmp/pyside && /tmp/pyside/bin/pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen /tmp/pyside/bin/python docs/render_module_preview.py
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UI_FILE = ROOT / "Rad4XCNN" / "Resources" / "UI" / "Rad4XCNN.ui"
OUT = ROOT / "docs" / "module_preview.png"

#: Slicer/CTK class -> the Qt class that stands in for it.
STAND_INS = {
    "qMRMLWidget": "QWidget",
    "ctkCollapsibleButton": "QGroupBox",
    "qMRMLNodeComboBox": "QComboBox",
    "ctkPathLineEdit": "QLineEdit",
    "ctkSliderWidget": "QWidget",  # filled with a QSlider and a QDoubleSpinBox below
}
#: Properties that only the Slicer/CTK classes have (dropped), and renamed ones.
DROPPED = {
    "nodeTypes",
    "showChildNodeTypes",
    "addEnabled",
    "removeEnabled",
    "noneEnabled",
    "nameFilters",
    "filters",
    "collapsed",
    "singleStep",
    "pageStep",
    "minimum",
    "maximum",
    "value",
    "decimals",
}

#: Example state shown in the preview (a BUSI run with ResNet-50).
EXAMPLE = {
    "backboneComboBox": ["resnet50", "densenet121", "resnet18", "vit_base_patch16_224"],
    "weightsSourceComboBox": ["checkpoint", "imagenet", "random"],
    "weightsPathLineEdit": "~/models/resnet50_busi_finetuned.pt",
    "deviceComboBox": ["auto", "cpu", "cuda"],
    "cohortSourceComboBox": ["manifest", "scene"],
    "manifestPathLineEdit": "~/data/BUSI/busi.csv",
    "radiomicsPresetComboBox": ["paper", "extended", "file"],
    "radiomicsParamsPathLineEdit": "",
    "outputFolderPathLineEdit": "~/runs/busi-resnet50",
    "caseImageSelector": ["malignant (12)"],
    "caseMaskSelector": ["malignant (12) segmentation"],
    "caseSegmentComboBox": ["lesion"],
    "camMethodComboBox": ["gradcam", "gradcam++", "eigencam", "scorecam", "layercam"],
    "scenePairsLabel": "1 image(s) with a segmentation: malignant (12)",
    "statusLabel": "radiomics: 468/780",
    "summaryLabel": "resnet50: 1187 of 2031 varying deep features explained at M = 0.60 (58%), 17 constant",
}
SLIDERS = {"thresholdSliderWidget": (0.05, 1.0, 0.6), "camOpacitySliderWidget": (0.0, 1.0, 0.5)}


def stand_in_ui(path: Path) -> bytes:
    """The .ui with Slicer/CTK classes replaced by Qt ones and their own properties dropped."""
    tree = ET.parse(path)
    for widget in tree.iter("widget"):
        cls = widget.get("class")
        if cls in STAND_INS:
            widget.set("class", STAND_INS[cls])
            for prop in list(widget.findall("property")):
                name = prop.get("name")
                if name in DROPPED:
                    widget.remove(prop)
                elif name == "text" and cls == "ctkCollapsibleButton":
                    prop.set("name", "title")
    root = tree.getroot()
    for tag in ("customwidgets", "connections"):
        for element in root.findall(tag):
            root.remove(element)
    return ET.tostring(root, encoding="utf-8")


def render(out: Path, width: int) -> Path:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import (
        QApplication,
        QComboBox,
        QDoubleSpinBox,
        QHBoxLayout,
        QLabel,
        QLineEdit,
        QPlainTextEdit,
        QProgressBar,
        QPushButton,
        QSlider,
        QVBoxLayout,
        QWidget,
    )

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    data = QByteArray(stand_in_ui(UI_FILE))  # kept referenced: the buffer does not own it
    buffer = QBuffer(data)
    buffer.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    panel = loader.load(buffer)
    for name, value in EXAMPLE.items():
        widget = panel.findChild(QWidget, name)
        if isinstance(widget, QComboBox):
            widget.clear()
            widget.addItems(value)
        elif isinstance(widget, QLineEdit):
            widget.setText(value)
            widget.setPlaceholderText("(not used)")
        elif isinstance(widget, QLabel):
            widget.setText(value)
    for name, (low, high, value) in SLIDERS.items():
        holder = panel.findChild(QWidget, name)
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        slider = QSlider(Qt.Horizontal)
        slider.setRange(0, 100)
        slider.setValue(round(100 * (value - low) / (high - low)))
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setDecimals(2)
        spin.setValue(value)
        row.addWidget(slider, 1)
        row.addWidget(spin)
    panel.findChild(QWidget, "radiomicsParamsPathLineEdit").setEnabled(False)
    panel.findChild(QWidget, "caseSegmentComboBox").setEnabled(True)
    progress = panel.findChild(QProgressBar, "progressBar")
    progress.setValue(60)
    for name in ("runButton", "loadResultsButton", "caseRunButton"):  # disabled while a run goes on
        panel.findChild(QPushButton, name).setEnabled(False)
    panel.findChild(QPushButton, "cancelButton").setEnabled(True)
    for name in (
        "showExplanationsButton",
        "showCorrelationsButton",
        "showClassificationButton",
        "showCoveragePlotButton",
        "showRhoPlotButton",
        "openReportButton",
    ):
        panel.findChild(QPushButton, name).setEnabled(True)
    log = panel.findChild(QPlainTextEdit, "logTextEdit")
    log.parentWidget().setMaximumHeight(42)  # the Log section is collapsed in the module
    log.hide()

    frame = QWidget()
    frame.setObjectName("frame")
    layout = QVBoxLayout(frame)
    caption = QLabel(
        "Rad4XCNN: layout preview rendered from Rad4XCNN.ui with example values (not a Slicer screenshot)"
    )
    caption.setWordWrap(True)
    caption.setStyleSheet("color: #555; font-style: italic;")
    layout.addWidget(caption)
    layout.addWidget(panel)
    frame.resize(width, frame.sizeHint().height())
    frame.adjustSize()
    frame.resize(width, frame.height())
    out.parent.mkdir(parents=True, exist_ok=True)
    if not frame.grab().save(str(out), "PNG"):
        raise RuntimeError(f"could not write {out}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.relative_to(ROOT)})"
    )
    parser.add_argument("--width", type=int, default=460, help="panel width in pixels (default 460)")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    path = render(args.out, args.width)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
