"""The settings of the explain part: the explanation rule |rho| >= M (``explain``) and the probes and CKA
(``probe``), with the vocabularies and ranges their rules use. Light: no numpy or pandas, so the command
line's help and the Slicer panel read these rules without loading the computation.
"""

from __future__ import annotations

from dataclasses import dataclass

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.infra.interval import Interval
from Rad4XCNNLogic.infra.settings import option

#: M, the smallest |rho| that explains: 0 would explain every deep feature by every radiomic feature.
THRESHOLD_RANGE = Interval(0, 1, low_open=True)
#: The Benjamini-Hochberg level of the optional q-value condition.
FDR_RANGE = Interval(0, 1, low_open=True)
#: The family-wise error level of the permutation null.
ALPHA_RANGE = Interval(0, 1, low_open=True, high_open=True)
#: The cases an explanation is computed on: ``train`` (train and val of the training cohort; the others
#: re-measure it) or ``all``.
CASES = ("train", "all")
#: ``random``: a random-weights copy of each backbone with weights is explained beside it; ``none``.
CONTROLS = ("random", "none")
#: The array backends (``torch:cuda:N`` picks a GPU by number).
BACKENDS = ("auto", "numpy", "torch", "torch:cpu", "torch:cuda")
#: The default grid of ridge penalties (on standardised features; the sum of squared singular values of a
#: layer is about cases x features, so the grid spans from almost no shrinkage to almost full).
DEFAULT_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
PENALTY_RANGE = Interval(0, low_open=True)
#: The fewest cases a stratum needs to enter the within-stratum rho: with many strata of 3 cases the t
#: approximation of p_within is liberal (README, "Strata").
MIN_STRATUM = 5


def check_threshold(threshold: float, fdr: float | None) -> None:
    """Refuse an M outside :data:`THRESHOLD_RANGE` or an FDR level outside :data:`FDR_RANGE`."""
    problem = THRESHOLD_RANGE.problem(threshold)
    if problem:
        raise Rad4XCNNError(f"the threshold M {problem}")
    problem = None if fdr is None else FDR_RANGE.problem(fdr)
    if problem:
        raise Rad4XCNNError(f"the FDR level {problem}")


def rule_text(threshold: float, fdr: float | None, within: str | None = None) -> str:
    """The explanation rule in words, the one place it is written: ``within`` is the strata's columns
    (comma-joined), ``""`` for the pooled rule said as such, None to leave the strata unsaid.

    >>> rule_text(0.6, 0.05), rule_text(0.6, None, ""), rule_text(0.7, 0.05, "label,cohort")
    ('|rho| >= 0.60 and q <= 0.05', '|rho| >= 0.60 pooled', '|rho| >= 0.70 and q <= 0.05 within label,cohort')
    """
    text = f"|rho| >= {threshold:.2f}" + (f" and q <= {fdr:g}" if fdr is not None else "")
    if within is None:
        return text
    return text + (f" within {within}" if within else " pooled")


@dataclass
class ExplainConfig:
    """Correlation of deep and radiomic features, and the explanation rule |rho| >= M."""

    thresholds: list[float] = option(
        [0.6],
        "values of M, the smallest |rho| that explains; the first is the primary one used downstream",
        interval=THRESHOLD_RANGE,
    )
    fdr: float | None = option(
        0.05, "also require q <= fdr (Benjamini-Hochberg); null: |rho| >= M alone", interval=FDR_RANGE
    )
    permutations: int = option(
        1000, "permutations for the family-wise null of max |rho| (0: none)", minimum=0
    )
    bootstrap: int = option(
        200, "bootstrap resamples for the 95% intervals of kept pairs (0: none)", minimum=0
    )
    alpha: float = option(0.05, "family-wise error level of the permutation null", interval=ALPHA_RANGE)
    backend: str = option("auto", "auto: torch on a GPU when present, else numpy", choices=BACKENDS)
    chunk_size: int | None = option(None, "deep features per chunk (null: by memory)", minimum=1)
    stratify: list[str] = option(
        ["label", "cohort"],
        "manifest columns (label, cohort, scanner, ...) within whose strata a pair must hold to explain; "
        "pairs that hold only pooled over them are 'confounded' or 'attenuated'; []: the paper's pooled rule",
    )
    min_stratum: int = option(
        MIN_STRATUM,
        "fewest cases a stratum needs to enter the within-stratum rho (smaller strata are left out and "
        "reported): with many tiny strata p_within is liberal",
        minimum=3,
    )
    control_bootstrap: int = option(
        200,
        "bootstrap resamples of the cases for the interval of each backbone's gain over its random-weights "
        "control (0: no interval, and no verdict)",
        minimum=0,
    )
    cases: str = option(
        "train",
        "cases the explanation, its permutation null, the suggested M and the classifiers' explained "
        "set come from: train (train and val of the training cohort; the internal test split and every "
        "other cohort re-measure the kept pairs) or all",
        choices=CASES,
    )


@dataclass
class ProbeConfig:
    """Probes (ridge regressions from each layer's deep features to each radiomic feature's ranks) and
    representation similarity (linear CKA): where each radiomic concept lives in the network."""

    penalties: list[float] = option(
        list(DEFAULT_PENALTIES),
        "the grid of ridge penalties (on standardised deep features) searched by cross-validation",
        interval=PENALTY_RANGE,
    )
    folds: int = option(
        5, "cross-validation folds over the training cases that choose each penalty", minimum=2
    )
    bootstrap: int = option(
        1000, "bootstrap resamples of the held-out cases for the 95% interval of R² (0: none)", minimum=0
    )
    permutations: int = option(200, "case shuffles of the CKA permutation baseline (0: none)", minimum=0)
    concepts: int = option(
        5, "most selective radiomic concepts whose classifier sensitivity is measured (TCAV-style)", minimum=1
    )
    random_directions: int = option(100, "random directions of the concept sensitivity's null", minimum=0)
    backend: str = option("auto", "auto: torch on a GPU when present, else numpy", choices=BACKENDS)
