"""Plot charts: the coverage of deep features against M with a marker at M, the histogram of Spearman's
rho, their values read back, and showing a chart in Slicer's plot view.
"""

from __future__ import annotations

import numpy as np
import slicer

from Rad4XCNNLib import bridge
from Rad4XCNNLib.tables import dataframe_from_table_node, table_node_from_dataframe

SERIES_COLOURS = (
    (0.122, 0.467, 0.706),
    (1.0, 0.498, 0.055),
    (0.173, 0.627, 0.173),
    (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741),
    (0.549, 0.337, 0.294),
)


# --------------------------------------------------------------------------------------------- plots
def _chart(name: str, chart=None):
    if chart is None:
        chart = bridge.current_scene().AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    return chart


def _series(chart, table, name: str, x: str, y: str, plot_type: int, colour, marker=None, line=None):
    """Find the chart's series ``name`` (or add it) and point it at ``table``'s columns ``x`` and ``y``."""
    scene = bridge.current_scene()
    series = None
    for i in range(chart.GetNumberOfPlotSeriesNodes()):
        candidate = chart.GetNthPlotSeriesNode(i)
        if candidate is not None and candidate.GetName() == name:
            series = candidate
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName(x)
    series.SetYColumnName(y)
    series.SetPlotType(plot_type)
    series.SetColor(*colour)
    if marker is not None:
        series.SetMarkerStyle(marker)
    if line is not None:
        series.SetLineStyle(line)
    return series


def plot_coverage(coverage, threshold: float | None = None, name: str = "Rad4XCNN coverage", chart=None):
    """Plot the explained fraction of deep features against M: one line per column of ``coverage``.

    ``coverage`` is a DataFrame indexed by M with one column per series (e.g. per backbone), values in
    [0, 1]. With ``threshold`` a vertical marker shows the current M. Returns the chart node; its table
    node is referenced by the series. Called again with the same ``chart``, it updates the nodes in place.

    Examples
    --------
    >>> m = pd.Index([0.5, 0.6, 0.7], name="M")  # doctest: +SKIP
    >>> cov = pd.DataFrame({"resnet50": [0.9, 0.6, 0.2]}, index=m)  # doctest: +SKIP
    >>> chart = plot_coverage(cov, threshold=0.6)  # doctest: +SKIP
    """
    import pandas as pd

    frame = pd.DataFrame(coverage).astype(float)
    frame.index = frame.index.astype(float)
    frame.index.name = "M"
    chart = _chart(name, chart)
    table = _chart_table(chart, "data", f"{name} table")
    table_node_from_dataframe(frame.sort_index(), "", node=table)
    for i, column in enumerate(frame.columns):
        _series(
            chart,
            table,
            str(column),
            "M",
            str(column),
            slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
            SERIES_COLOURS[i % len(SERIES_COLOURS)],
            marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle,
            line=slicer.vtkMRMLPlotSeriesNode.LineStyleSolid,
        )
    set_threshold_marker(chart, threshold, (0.0, 1.0))
    chart.SetTitle("Deep features explained by radiomics")
    chart.SetXAxisTitle("M (threshold on |Spearman rho|)")
    chart.SetYAxisTitle("fraction of deep features explained")
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetYAxisRangeAuto(False)
    chart.SetAttribute(bridge.ROLE_ATTRIBUTE, "coverage")
    return chart


def _chart_table(chart, role: str, name: str):
    """The table node referenced by ``chart`` under ``role``, created when missing."""
    reference = f"Rad4XCNN.{role}"
    table = chart.GetNodeReference(reference)
    if table is None:
        table = bridge.current_scene().AddNewNodeByClass("vtkMRMLTableNode", name)
        chart.SetNodeReferenceID(reference, table.GetID())
    return table


def set_threshold_marker(chart, threshold: float | None, y_range: tuple[float, float]) -> None:
    """Show (or, with ``threshold`` None, hide) a dashed vertical line at M on ``chart``."""
    import pandas as pd

    name = "M"
    table = _chart_table(chart, "marker", f"{chart.GetName()} M")
    for i in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(i)
        if series is not None and series.GetName() == name and threshold is None:
            chart.RemovePlotSeriesNodeID(series.GetID())
            bridge.current_scene().RemoveNode(series)
            return
    if threshold is None:
        return
    marker = pd.DataFrame({"x": [float(threshold)] * 2, "y": [float(y_range[0]), float(y_range[1])]})
    table_node_from_dataframe(marker, "", node=table, index=False)
    _series(
        chart,
        table,
        name,
        "x",
        "y",
        slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
        (0.3, 0.3, 0.3),
        marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone,
        line=slicer.vtkMRMLPlotSeriesNode.LineStyleDash,
    )


def rho_histogram(rho, bins: int = 40, threshold: float | None = None):
    """Counts of rho values in ``bins`` equal bins over [-1, 1], split at ``|rho| >= threshold``.

    Returns a DataFrame indexed by the bin centre ``rho`` with columns ``below M`` and ``|rho| >= M``
    (a bin is counted in the second when its centre's magnitude reaches M). NaNs are left out.
    """
    import pandas as pd

    values = np.asarray(rho, dtype=float).ravel()
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(np.clip(values, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    explained = np.abs(centres) >= threshold if threshold is not None else np.zeros(bins, bool)
    frame = pd.DataFrame(
        {"below M": np.where(explained, 0, counts), "|rho| >= M": np.where(explained, counts, 0)},
        index=pd.Index(np.round(centres, 6), name="rho"),
    )
    return frame


def plot_rho_histogram(
    rho, threshold: float | None = None, bins: int = 40, name: str = "Rad4XCNN rho histogram", chart=None
):
    """Plot the histogram of Spearman's rho (all deep x radiomic pairs), bins at ``|rho| >= M`` highlighted.

    ``rho`` is any array of correlations (e.g. the full deep x radiomic matrix). Returns the chart node;
    called again with the same ``chart`` (e.g. when the M slider moves) it refills the same nodes.
    """
    frame = rho_histogram(rho, bins=bins, threshold=threshold)
    chart = _chart(name, chart)
    table = _chart_table(chart, "data", f"{name} table")
    table_node_from_dataframe(frame, "", node=table)
    for column, colour in zip(frame.columns, ((0.6, 0.6, 0.6), (0.839, 0.153, 0.157)), strict=True):
        _series(chart, table, column, "rho", column, slicer.vtkMRMLPlotSeriesNode.PlotTypeBar, colour)
    chart.SetTitle("Spearman rho, deep x radiomic features")
    chart.SetXAxisTitle("rho")
    chart.SetYAxisTitle("feature pairs")
    chart.SetAttribute(bridge.ROLE_ATTRIBUTE, "rho-histogram")
    return chart


def series_values(chart, series_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) values that ``chart``'s series ``series_name`` plots, read back from its table node."""
    for i in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(i)
        if series is not None and series.GetName() == series_name:
            table = dataframe_from_table_node(series.GetTableNode(), index_col=None)
            return (
                table[series.GetXColumnName()].to_numpy(dtype=float),
                table[series.GetYColumnName()].to_numpy(dtype=float),
            )
    raise KeyError(f"chart '{chart.GetName()}' has no series '{series_name}'")


def show_chart(chart_node) -> None:
    """Show ``chart_node`` in Slicer's plot view (switching to a layout that has one if needed)."""
    slicer.modules.plots.logic().ShowChartInLayout(chart_node)
