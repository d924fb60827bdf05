"""The settings of the run part's own outputs: the HTML report. Light (no pandas, no matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.infra.settings import option


@dataclass
class ReportConfig:
    """The HTML report."""

    top_features: int = option(10, "explained deep features listed per backbone", minimum=1)
    heatmap_features: int = option(30, "deep and radiomic features in the clustered heatmap", minimum=2)
