"""Feature tables and feature sets: read and join feature CSVs, recognise deep and radiomic columns, and
group the columns into the named feature sets that the classifiers compare.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from Rad4XCNNLogic.classify.design import STAGE
from Rad4XCNNLogic.errors import CaseFailure, Rad4XCNNError, first_line
from Rad4XCNNLogic.names import RADIOMIC_SET, deep_model, feature_set_name, is_radiomic_feature

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ feature sets
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
        model = deep_model(c)
        if model is not None:
            by_model.setdefault(model, []).append(c)
    explained_set = None if explained is None else {str(e) for e in explained}
    sets: dict[str, list[str]] = {}
    single = len(by_model) == 1
    for model, deep in by_model.items():
        key = None if single else model
        sets[feature_set_name("deep", key)] = deep
        if radiomic:
            sets[feature_set_name("combined", key)] = deep + radiomic
        if explained_set is not None:
            kept = [c for c in deep if c in explained_set]
            if kept:
                sets[feature_set_name("explained", key)] = kept
            else:
                log.warning("no deep feature of %s is among the explained features: no explained set", model)
    if radiomic:
        # radiomic goes second, after the first deep set, as in the paper's tables
        ordered = dict(list(sets.items())[:1])
        ordered[RADIOMIC_SET] = radiomic
        ordered.update(sets)
        sets = ordered
    return sets


#: Manifest columns: never features, even when numeric (a label column in a feature table would leak it).
_MANIFEST_COLUMNS = {"case_id", "image", "mask", "label", "split", "cohort", "has_lesion", "patient_id"}
_MANIFEST_COLUMNS |= {"split_group"}
#: ``frame.attrs`` key of :func:`read_feature_tables`: column -> the feature set of unrecognised columns.
OTHER_SETS_KEY = "other_feature_sets"
#: The set name of unrecognised numeric columns of a table that has no file name.
OTHER_SET = "other"


def parse_feature_source(source) -> tuple[str | None, Path]:
    """(set name or None, path) of a ``--features`` argument: ``FILE``, ``NAME=FILE`` or a (name, path) pair.

    ``NAME=FILE`` is read as a name only when the whole text is not itself an existing file and NAME has no
    path separator.

    Examples
    --------
    >>> parse_feature_source("clinical=tables/clin.csv")
    ('clinical', PosixPath('tables/clin.csv'))
    >>> parse_feature_source("radiomics.csv")
    (None, PosixPath('radiomics.csv'))
    """
    if isinstance(source, tuple):
        name, path = source
        return (str(name) if name else None), Path(path)
    text = os.fspath(source)
    name, sep, rest = text.partition("=")
    if sep and name.strip() and rest and not Path(text).is_file() and "/" not in name and "\\" not in name:
        return name.strip(), Path(rest)
    return None, Path(text)


def read_feature_tables(paths: Sequence) -> tuple[Any, list[CaseFailure]]:
    """Read feature CSVs (case_id first column) and join them on case_id.

    Each entry is a path, ``NAME=PATH`` or a (name, path) pair (:func:`parse_feature_source`). Numeric
    columns that are neither deep (``<model>_<index>``) nor PyRadiomics features - clinical variables,
    features from other tools - form a feature set named NAME, or after the file's stem; the joined frame
    records it in ``frame.attrs[OTHER_SETS_KEY]`` (column -> set name), which :func:`resolve_feature_sets`
    reads. Text columns are not features (they are dropped, and logged).

    Cases missing from some of the files are left out and returned as failures; a column that appears in
    two files, a repeated case_id, a file without a numeric column, or a file that cannot be read raises
    :class:`Rad4XCNNError`.

    Examples
    --------
    >>> frame, failures = read_feature_tables(["deep_features.csv", "radiomics.csv"])  # doctest: +SKIP
    >>> frame, _ = read_feature_tables(["clinical=clin.csv"])  # doctest: +SKIP
    >>> set(frame.attrs["other_feature_sets"].values())  # doctest: +SKIP
    {'clinical'}
    """
    import pandas as pd

    if not paths:
        raise Rad4XCNNError("no feature table given")
    frames = []
    owner: dict[str, str] = {}
    other_sets: dict[str, str] = {}
    for source in paths:
        set_name, path = parse_feature_source(source)
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
            text = first_line(exc)
            raise Rad4XCNNError(f"feature table {path.name} is not a readable CSV: {text}") from None
        frame = frame.set_index(first)
        frame.index = frame.index.astype(str).str.strip()
        frame.index.name = "case_id"
        duplicated = frame.index[frame.index.duplicated()].unique().tolist()
        if duplicated:
            raise Rad4XCNNError(
                f"feature table {path.name} repeats case_id {', '.join(map(repr, duplicated[:5]))}"
            )
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        if not numeric:
            raise Rad4XCNNError(
                f"feature table {path.name} has no numeric column "
                f"(found: {', '.join(map(str, frame.columns[:5]))})"
            )
        text_columns = [c for c in frame.columns if c not in numeric]
        if text_columns:
            log.info(
                "%s: %d text column(s) are not features: %s", path.name, len(text_columns), text_columns[:5]
            )
            frame = frame[numeric]
        for column in frame.columns:
            if column in owner:
                raise Rad4XCNNError(f"feature column {column!r} is in both {owner[column]} and {path.name}")
            owner[column] = path.name
            if _is_other(column):
                other_sets[str(column)] = set_name or path.stem
        frames.append((path.name, frame))
    everywhere = set.intersection(*(set(f.index) for _, f in frames))
    failures = []
    for case_id in sorted(set().union(*(set(f.index) for _, f in frames)) - everywhere):
        missing = [name for name, f in frames if case_id not in f.index]
        failures.append(CaseFailure(case_id, STAGE, f"no row in {', '.join(missing)}"))
    joined = pd.concat([f.loc[[i for i in f.index if i in everywhere]] for _, f in frames], axis=1)
    joined.attrs[OTHER_SETS_KEY] = other_sets
    return joined, failures


def _is_other(column) -> bool:
    """A feature column neither deep, nor radiomic, nor a manifest column or a PyRadiomics diagnostic."""
    name = str(column)
    return (
        deep_model(name) is None
        and not is_radiomic_feature(name)
        and name.strip().lower() not in _MANIFEST_COLUMNS
        and not name.startswith("diagnostics_")
    )


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


def resolve_feature_sets(features, feature_sets=None, explained=None) -> dict[str, list[str]]:
    """The feature sets of a classification: ``feature_sets`` checked against the table, or the default sets.

    Default: :func:`infer_feature_sets` (deep, radiomic, combined, explained) and, for every other numeric
    column, a set named as :func:`read_feature_tables` recorded (the file's stem or the NAME given), or
    ``other`` for a frame built in memory. Manifest columns (e.g. ``label``) are never features.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"resnet50_0": [1.0], "age": [61.0], "label": [1]})
    >>> {k: v for k, v in resolve_feature_sets(frame).items()}
    {'deep': ['resnet50_0'], 'other': ['age']}
    """
    import pandas as pd

    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    if feature_sets is None:
        sets = infer_feature_sets(numeric, explained)
        named = dict(features.attrs.get(OTHER_SETS_KEY, {}))
        for column in numeric:
            if _is_other(column):
                name = named.get(str(column), OTHER_SET)
                if name in sets and not all(_is_other(c) for c in sets[name]):
                    raise Rad4XCNNError(
                        f"feature set name {name!r} is taken by a default set: name the table (NAME=FILE)"
                    )
                sets.setdefault(name, []).append(column)
        leaked = [c for c in features.columns if str(c).strip().lower() in _MANIFEST_COLUMNS]
        if leaked:
            log.warning("manifest column(s) in the feature table are not features: %s", ", ".join(leaked))
        if not sets:
            raise Rad4XCNNError(
                "no numeric feature column in the feature table (found: "
                f"{', '.join(map(str, list(features.columns)[:5])) or 'none'})"
            )
        ignored = [c for c in features.columns if not any(c in cols for cols in sets.values())]
        if ignored:
            log.info("%d column(s) not used as features: %s", len(ignored), ", ".join(map(str, ignored[:5])))
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
