"""Table nodes: a pandas DataFrame as a ``vtkMRMLTableNode`` and back, and showing a table in Slicer's table
view. pandas is imported when a table is made (it is not part of 3D Slicer's Python).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from Rad4XCNNLib import bridge
from Rad4XCNNLogic.errors import Rad4XCNNError


# -------------------------------------------------------------------------------------------- tables
def table_node_from_dataframe(
    frame,
    name: str,
    node=None,
    index: bool = True,
    descriptions: Mapping[str, str] | None = None,
):
    """A pandas DataFrame as a ``vtkMRMLTableNode`` (new, or ``node`` refilled), one typed column per column.

    With ``index`` the index becomes the first column (named after the index, or ``case_id``/``name``),
    as in the run folder's CSV tables. Numbers become double or integer columns, booleans bit columns,
    anything else text; missing values become NaN (numbers) or empty text. ``descriptions`` fills the
    columns' descriptions (shown as tooltips in Slicer's table view).

    Examples
    --------
    >>> frame = pd.read_csv("run/explanations.csv", index_col=0)  # doctest: +SKIP
    >>> node = table_node_from_dataframe(frame, "explanations")  # doctest: +SKIP
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if index:
        index_name = frame.index.name or ("name" if not pd.api.types.is_integer_dtype(frame.index) else "row")
        frame = (
            frame.reset_index(names=index_name) if index_name not in frame.columns else frame.reset_index()
        )
    if node is None:
        node = bridge.current_scene().AddNewNodeByClass("vtkMRMLTableNode", name)
    elif name:
        node.SetName(name)
    table = node.GetTable()
    was_modifying = node.StartModify()
    node.RemoveAllColumns()
    for column_name in frame.columns:
        values = frame[column_name]
        column = _vtk_column(values)
        column.SetName(str(column_name))
        table.AddColumn(column)
    table.Modified()
    for column_name, text in (descriptions or {}).items():
        if str(column_name) in [str(c) for c in frame.columns]:
            node.SetColumnDescription(str(column_name), str(text))
    node.EndModify(was_modifying)
    node.Modified()
    return node


def _vtk_column(values):
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        column = vtk.vtkBitArray()
        column.SetNumberOfValues(len(values))
        for row, value in enumerate(values.to_numpy()):
            column.SetValue(row, int(bool(value)))
        return column
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return numpy_support.numpy_to_vtk(
            values.to_numpy(dtype=np.int64), deep=True, array_type=vtk.VTK_LONG_LONG
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        return numpy_support.numpy_to_vtk(
            values.to_numpy(dtype=np.float64), deep=True, array_type=vtk.VTK_DOUBLE
        )
    column = vtk.vtkStringArray()
    column.SetNumberOfValues(len(values))
    for row, value in enumerate(values.tolist()):
        column.SetValue(
            row, "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        )
    return column


def dataframe_from_table_node(node, index_col: int | str | None = 0):
    """A ``vtkMRMLTableNode`` as a pandas DataFrame, with typed columns; ``index_col`` becomes the index."""
    import pandas as pd

    if node is None or not node.IsA("vtkMRMLTableNode"):
        raise Rad4XCNNError(f"expected a table node, got {bridge.node_name(node)}")
    table = node.GetTable()
    data = {}
    for i in range(table.GetNumberOfColumns()):
        column = table.GetColumn(i)
        name = column.GetName() or f"column{i}"
        n = column.GetNumberOfTuples()
        if isinstance(column, vtk.vtkStringArray):
            data[name] = [column.GetValue(r) for r in range(n)]
        elif isinstance(column, vtk.vtkBitArray):
            data[name] = np.array([bool(column.GetValue(r)) for r in range(n)], dtype=bool)
        elif column.GetNumberOfComponents() == 1:
            data[name] = numpy_support.vtk_to_numpy(column).copy()
        else:
            array = numpy_support.vtk_to_numpy(column)
            data[name] = [tuple(row) for row in array]
    frame = pd.DataFrame(data)
    if index_col is not None and len(frame.columns):
        key = frame.columns[index_col] if isinstance(index_col, int) else index_col
        frame = frame.set_index(key)
    return frame


# ------------------------------------------------------------------------------------------ showing
def show_table(table_node) -> None:
    """Make ``table_node`` the active table and show it in Slicer's table view."""
    app = bridge.application_logic()
    if bridge.in_slicer_application():
        layout_manager = slicer.app.layoutManager()
        if layout_manager is not None:
            layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
    app.GetSelectionNode().SetActiveTableID(table_node.GetID())
    app.PropagateTableSelection()
