"""The radiomic features of a cohort as a result (features, diagnostics, failures, quality, settings) and the
files it is written to: ``radiomics.csv`` and its side files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from Rad4XCNNLogic.errors import CaseFailure
from Rad4XCNNLogic.infra.storage import write_csv_atomic, write_json_atomic

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RadiomicsResult:
    """Radiomic features of a cohort and everything needed to judge and reproduce them.

    Attributes
    ----------
    features : DataFrame, case_id x feature (PyRadiomics names such as ``original_glcm_Contrast``), float64,
        rows in the cohort's order, columns in PyRadiomics' order; only cases that succeeded.
    diagnostics : DataFrame, case_id x PyRadiomics diagnostics (image/mask hashes, sizes, bounding box,
        versions) and ``image_sha256``, ``mask_sha256``, ``extraction_seconds``.
    failures : the cases that gave no features, with the reason (stage ``radiomics``).
    settings : the parameter file (name, path, hash, text), its ``setting`` section, and library versions.
    nonfinite : feature -> number of cases where it is NaN or infinite (only features with any).
    constant : features with fewer than two distinct finite values across the cases (they cannot be
        correlated with anything).
    cache_hits, cache_misses : cases read from the cache and cases computed.
    seconds : wall time of the extraction.
    """

    features: pd.DataFrame
    diagnostics: pd.DataFrame
    failures: list[CaseFailure]
    settings: dict
    nonfinite: pd.Series
    constant: list[str]
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    case_ids: list[str] = field(default_factory=list)

    @property
    def quality(self) -> pd.DataFrame:
        """Per-feature quality table: ``n_nan``, ``n_inf`` and ``constant`` for every feature."""
        import pandas as pd

        values = self.features.to_numpy(dtype=float)
        frame = pd.DataFrame(
            {
                "n_nan": np.isnan(values).sum(axis=0).astype(int),
                "n_inf": np.isinf(values).sum(axis=0).astype(int),
                "constant": self.features.columns.isin(self.constant),
            },
            index=pd.Index(self.features.columns, name="feature"),
        )
        return frame

    def summary(self) -> dict:
        """Counts for run.json and the command line."""
        return {
            "params": self.settings.get("params"),
            "cases": len(self.case_ids),
            "extracted": len(self.features),
            "failed": len(self.failures),
            "features": int(self.features.shape[1]),
            "features_with_nonfinite": len(self.nonfinite),
            "constant_features": len(self.constant),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "seconds": round(self.seconds, 3),
        }


def side_files(out_csv: str | os.PathLike) -> dict[str, Path]:
    """The files :func:`write_radiomics` writes for ``out_csv`` (e.g. ``radiomics.csv``).

    Examples
    --------
    >>> sorted(side_files("run/radiomics.csv"))
    ['diagnostics', 'failures', 'features', 'quality', 'settings']
    """
    out = Path(out_csv)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "features": out,
        "diagnostics": out.with_name(f"{stem}_diagnostics.csv"),
        "failures": out.with_name(f"{stem}_failures.csv"),
        "quality": out.with_name(f"{stem}_quality.csv"),
        "settings": out.with_name(f"{stem}_settings.json"),
    }


def write_radiomics(
    result: RadiomicsResult, out_csv: str | os.PathLike, *, extra_failures: Sequence[CaseFailure] = ()
) -> dict[str, Path]:
    """Write ``radiomics.csv`` and its side files, each atomically; return their paths by role.

    ============================  ==================================================================
    ``radiomics.csv``             case_id x features (docs/ARCHITECTURE.md), full float64 precision
    ``radiomics_diagnostics.csv`` case_id x PyRadiomics diagnostics and the input hashes
    ``radiomics_failures.csv``    case_id, stage, problem of every case left out (``extra_failures``,
                                  e.g. the manifest's, first); written even when empty
    ``radiomics_quality.csv``     feature x n_nan, n_inf, constant
    ``radiomics_settings.json``   the parameters (file, hash, text), versions, and the run's summary
    ============================  ==================================================================

    Examples
    --------
    >>> paths = write_radiomics(result, "run/radiomics.csv")  # doctest: +SKIP
    >>> pd.read_csv(paths["features"], index_col=0).shape  # doctest: +SKIP
    (437, 474)
    """
    import pandas as pd

    paths = side_files(out_csv)
    write_csv_atomic(paths["features"], result.features)
    write_csv_atomic(paths["diagnostics"], result.diagnostics)
    failures = [*extra_failures, *result.failures]
    frame = pd.DataFrame([f.to_dict() for f in failures], columns=["case_id", "stage", "problem"])
    write_csv_atomic(paths["failures"], frame.set_index("case_id"))
    write_csv_atomic(paths["quality"], result.quality)
    summary = result.summary()
    summary["failed"] = len(failures)
    write_json_atomic(
        paths["settings"],
        {
            **result.settings,
            "summary": summary,
            "nonfinite": {k: int(v) for k, v in result.nonfinite.items()},
            "constant": list(result.constant),
            "failures": [f.to_dict() for f in failures],
        },
    )
    return paths
