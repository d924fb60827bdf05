"""Rad4XCNN engine: explain a CNN's deep features through radiomic features clinicians already know.

The package imports nothing heavy at module level (no torch, radiomics or xgboost), so that importing it and
running ``rad4xcnn --help`` is fast and works before the heavy stack is installed.
"""

from __future__ import annotations

__version__ = "0.1.0"

from Rad4XCNNLogic.errors import CaseError, CaseFailure, Rad4XCNNError

__all__ = ["CaseError", "CaseFailure", "Rad4XCNNError", "__version__"]
