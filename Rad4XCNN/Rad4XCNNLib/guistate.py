"""What the module's widgets show, decided without Qt: which buttons are enabled, and whether a field's text
must be rewritten from the parameter node.

The widget applies these answers; keeping the decisions here lets the pytest suite check them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Buttons that show a result node, and the parameter-node reference each one needs.
RESULT_BUTTONS = {
    "showExplanationsButton": "ExplanationsTable",
    "showCorrelationsButton": "CorrelationsTable",
    "showClassificationButton": "ClassificationTable",
    "showCaseTableButton": "CaseTable",
    "showCoveragePlotButton": "CoverageChart",
    "showRhoPlotButton": "RhoChart",
}


def enabled_states(
    values: Mapping[str, Any], *, running: bool, installing: bool, unsupported: bool = False
) -> dict[str, bool]:
    """Which widgets are enabled, by widget name, for the settings ``values``.

    ``running``: a background run is going on; ``installing``: packages are being installed (Run, Explain
    and Load stay disabled, so that a second click cannot start a second pip); ``unsupported``: this
    Slicer is too old (nothing that runs the engine is enabled).

    Examples
    --------
    >>> enabled_states({"OutputFolder": "/tmp/run"}, running=False, installing=True)["runButton"]
    False
    """
    busy = running or installing or unsupported
    mask = values.get("CaseMask")
    folder = values.get("OutputFolder") or ""
    states = {
        "weightsPathLineEdit": values.get("WeightsSource") == "checkpoint",
        "manifestPathLineEdit": values.get("CohortSource") == "manifest",
        "radiomicsParamsPathLineEdit": values.get("RadiomicsPreset") == "file",
        "caseSegmentComboBox": mask is not None and mask.IsA("vtkMRMLSegmentationNode"),
        "runButton": not busy and bool(folder),
        "demoButton": not busy,
        "cancelButton": running,
        "loadResultsButton": not busy and bool(folder),
        "caseRunButton": not busy and values.get("CaseImage") is not None and mask is not None,
        "openReportButton": bool(folder) and (Path(folder) / "report.html").is_file(),
        "reinstallTorchButton": not busy,
        "estimateButton": not busy,
        "upgradePackagesButton": not busy,
    }
    for button, reference in RESULT_BUTTONS.items():
        states[button] = values.get(reference) is not None
    return states


def text_to_show(current: str, value: Any) -> str | None:
    """The text to put in an editable field for ``value``, or None when the field already shows it.

    Rewriting a field with the text it holds moves the cursor to its end while the user types (each
    keystroke stores the value, whose Modified event comes back here); equal text is left alone.

    Examples
    --------
    >>> text_to_show("resnet5", "resnet5") is None
    True
    >>> text_to_show("", None)
    >>> text_to_show("label", ["label", "cohort"])
    'label, cohort'
    """
    if isinstance(value, (list, tuple)):  # a list setting, shown as its comma-separated items
        value = ", ".join(map(str, value))
    text = "" if value is None else str(value)
    return None if text == (current or "") else text


def scene_pairs_text(case_ids: list[str], shown: int = 5) -> str:
    """The Cohort panel's line about the scene's image/segmentation pairs.

    Examples
    --------
    >>> scene_pairs_text(["a", "b"])
    '2 image(s) with a segmentation: a, b'
    """
    if not case_ids:
        return "no image with a segmentation in the scene"
    names = ", ".join(case_ids[:shown]) + (", ..." if len(case_ids) > shown else "")
    return f"{len(case_ids)} image(s) with a segmentation: {names}"
