"""Feature tables and feature sets: read and join feature CSVs, recognise deep and radiomic columns, and
group the columns into the named feature sets that the classifiers compare.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.classify.design import STAGE
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError

log = logging.getLogger(__name__)

_RADIOMIC_IMAGE_TYPE = (
    r"original|wavelet-[LH]{2,3}|log-sigma-[0-9]+(?:-[0-9]+)?-mm-[23]D|square|squareroot|logarithm"
    r"|exponential|gradient|lbp-2D|lbp-3D-[A-Za-z0-9]+"
)
_RADIOMIC_CLASS = r"shape|shape2D|firstorder|glcm|glrlm|glszm|gldm|ngtdm"
_RADIOMIC_RE = re.compile(rf"^(?:{_RADIOMIC_IMAGE_TYPE})_(?:{_RADIOMIC_CLASS})_[A-Za-z0-9]+$")
_DEEP_RE = re.compile(r"^(?P<model>.+)_(?P<index>[0-9]+)$")


# ------------------------------------------------------------------------------------------ feature sets
def is_radiomic_feature(name: str) -> bool:
    """Whether ``name`` is a PyRadiomics feature name (``<image type>_<class>_<feature>``).

    Examples
    --------
    >>> is_radiomic_feature("wavelet-HL_glcm_Contrast"), is_radiomic_feature("resnet50_17")
    (True, False)
    """
    return bool(_RADIOMIC_RE.match(str(name)))


def deep_feature_model(name: str) -> str | None:
    """The backbone of a deep feature named ``<model>_<index>``, or None for any other name.

    Examples
    --------
    >>> deep_feature_model("vit_base_patch16_224_5"), deep_feature_model("original_glcm_Contrast")
    ('vit_base_patch16_224', None)
    """
    name = str(name)
    if is_radiomic_feature(name):
        return None
    match = _DEEP_RE.match(name)
    return match.group("model") if match else None


def infer_feature_sets(
    columns: Iterable[str], explained: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """The default feature sets of a feature table, from its column names.

    With one backbone: ``deep``, ``radiomic``, ``deep+radiomic`` and ``explained-deep`` (the deep features
    in ``explained`` - those with a radiomic partner at M). With several backbones each gets its own sets:
    ``deep-<model>``, ``deep-<model>+radiomic``, ``explained-deep-<model>``. A set without features is not
    made; columns that are neither deep nor radiomic (e.g. PyRadiomics ``diagnostics_*``) are ignored.

    Examples
    --------
    >>> sets = infer_feature_sets(["resnet50_0", "resnet50_1", "original_glcm_Contrast"], ["resnet50_1"])
    >>> {name: len(cols) for name, cols in sets.items()}
    {'deep': 2, 'radiomic': 1, 'deep+radiomic': 3, 'explained-deep': 1}
    """
    columns = [str(c) for c in columns]
    radiomic = [c for c in columns if is_radiomic_feature(c)]
    by_model: dict[str, list[str]] = {}
    for c in columns:
        model = deep_feature_model(c)
        if model is not None:
            by_model.setdefault(model, []).append(c)
    explained_set = None if explained is None else {str(e) for e in explained}
    sets: dict[str, list[str]] = {}
    single = len(by_model) == 1
    for model, deep in by_model.items():
        suffix = "" if single else f"-{model}"
        sets[f"deep{suffix}"] = deep
        if radiomic:
            sets[f"deep{suffix}+radiomic"] = deep + radiomic
        if explained_set is not None:
            kept = [c for c in deep if c in explained_set]
            if kept:
                sets[f"explained-deep{suffix}"] = kept
            else:
                log.warning("no deep feature of %s is among the explained features: no explained set", model)
    if radiomic:
        # radiomic goes second, after the first deep set, as in the paper's tables
        ordered = dict(list(sets.items())[:1])
        ordered["radiomic"] = radiomic
        ordered.update(sets)
        sets = ordered
    return sets


def read_feature_tables(paths: Sequence[str | os.PathLike]) -> tuple[Any, list[CaseFailure]]:
    """Read feature CSVs (case_id first column) and join them on case_id.

    Cases missing from some of the files are left out and returned as failures; a column that appears in
    two files, a repeated case_id, or a file that cannot be read raises :class:`Rad4XCNNError`.

    Examples
    --------
    >>> frame, failures = read_feature_tables(["deep_features.csv", "radiomics.csv"])  # doctest: +SKIP
    """
    import pandas as pd

    if not paths:
        raise Rad4XCNNError("no feature table given")
    frames = []
    owner: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise Rad4XCNNError(f"feature table not found: {path}")
        try:
            header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
            if len(header.columns) < 2:
                raise Rad4XCNNError(
                    f"feature table {path.name} has no feature column (expected case_id, ...)"
                )
            first = header.columns[0]
            frame = pd.read_csv(path, dtype={first: str}, encoding="utf-8-sig")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Rad4XCNNError(f"feature table {path.name} is not a readable CSV: {text}") from None
        frame = frame.set_index(first)
        frame.index = frame.index.astype(str).str.strip()
        frame.index.name = "case_id"
        duplicated = frame.index[frame.index.duplicated()].unique().tolist()
        if duplicated:
            raise Rad4XCNNError(
                f"feature table {path.name} repeats case_id {', '.join(map(repr, duplicated[:5]))}"
            )
        for column in frame.columns:
            if column in owner:
                raise Rad4XCNNError(f"feature column {column!r} is in both {owner[column]} and {path.name}")
            owner[column] = path.name
        frames.append((path.name, frame))
    everywhere = set.intersection(*(set(f.index) for _, f in frames))
    failures = []
    for case_id in sorted(set().union(*(set(f.index) for _, f in frames)) - everywhere):
        missing = [name for name, f in frames if case_id not in f.index]
        failures.append(CaseFailure(case_id, STAGE, f"no row in {', '.join(missing)}"))
    joined = pd.concat([f.loc[[i for i in f.index if i in everywhere]] for _, f in frames], axis=1)
    return joined, failures


def read_explained(path: str | os.PathLike) -> list[str]:
    """The explained deep features listed by an ``explanations.csv``: rows with ``n_partners > 0``.

    The file needs a ``deep_feature`` column (or the deep feature names as its first column) and an
    ``n_partners`` column, as written by the explanation stage.

    Examples
    --------
    >>> explained = read_explained("run/explanations.csv")  # doctest: +SKIP
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise Rad4XCNNError(f"explanations table not found: {path}")
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise Rad4XCNNError(f"explanations table {path.name} is not a readable CSV") from None
    if "n_partners" not in frame.columns:
        raise Rad4XCNNError(f"explanations table {path.name} lacks the column n_partners")
    names = frame["deep_feature"] if "deep_feature" in frame.columns else frame.iloc[:, 0]
    counts = pd.to_numeric(frame["n_partners"], errors="coerce").fillna(0)
    return [str(n) for n, k in zip(names, counts, strict=True) if k > 0]


def _resolve_feature_sets(features, feature_sets, explained) -> dict[str, list[str]]:
    import pandas as pd

    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    if feature_sets is None:
        sets = infer_feature_sets(numeric, explained)
        if not sets:
            raise Rad4XCNNError(
                "no feature column recognised: expected deep features named <model>_<index> "
                "(e.g. resnet50_17) or PyRadiomics names (e.g. original_glcm_Contrast); "
                "pass the feature sets explicitly"
            )
        ignored = [c for c in features.columns if not any(c in cols for cols in sets.values())]
        if ignored:
            log.info(
                "%d column(s) neither deep nor radiomic, not used: %s",
                len(ignored),
                ", ".join(map(str, ignored[:5])),
            )
        return sets
    sets = {}
    columns = set(features.columns)
    for name, cols in feature_sets.items():
        cols = [str(c) for c in cols]
        if not cols:
            raise Rad4XCNNError(f"feature set {name!r} is empty")
        missing = [c for c in cols if c not in columns]
        if missing:
            raise Rad4XCNNError(
                f"feature set {name!r}: {len(missing)} column(s) not in the feature table, e.g. "
                f"{', '.join(map(repr, missing[:3]))}"
            )
        text = [c for c in cols if c not in numeric]
        if text:
            raise Rad4XCNNError(
                f"feature set {name!r}: column(s) not numeric, e.g. {', '.join(map(repr, text[:3]))}"
            )
        sets[str(name)] = cols
    if not sets:
        raise Rad4XCNNError("no feature set given")
    return sets
