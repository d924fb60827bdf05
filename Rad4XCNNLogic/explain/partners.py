"""Redundancy clusters of radiomic features, so that a deep feature's partners read as a few groups.

Radiomic features are often near copies of each other (mean, median, RMS of intensity, on the original and
the wavelet-LL image). They are clustered hierarchically on |rho| between them over the cases used; each
cluster is named by its most central member, its family and its plain-language meaning from the glossary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.glossary import family_of, short_meaning
from Rad4XCNNLogic.infra.storage import write_csv_atomic

log = logging.getLogger(__name__)

CLUSTER_LEVEL = 0.8
"""Average-linkage cut: two groups of radiomic features merge while the mean |rho| between their members is
at least 0.8, i.e. the tree of distances ``1 - |rho|`` is cut at 0.2. At 0.8 a feature predicts another's
rank order closely enough that naming one of them says what the group measures."""


@dataclass
class RadiomicClusters:
    """Which redundancy cluster each radiomic feature belongs to.

    ``table`` is indexed by radiomic feature, with ``cluster`` (the name of the cluster: its most central
    member), ``family`` (that member's image type and category), ``n_members``, ``centrality`` (the
    feature's mean |rho| with the other members; 1 for a singleton) and ``sign`` (+1 or -1: the sign of its
    rho with the central member, so a group of features that rise and fall against each other reads right).
    """

    table: pd.DataFrame
    level: float = CLUSTER_LEVEL

    @property
    def n_clusters(self) -> int:
        return int(self.table["cluster"].nunique())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as ``radiomic_clusters.csv`` (with the cut level in a column)."""
        return write_csv_atomic(Path(path), self.table.assign(level=self.level))

    @classmethod
    def load(cls, path: str | os.PathLike) -> RadiomicClusters | None:
        """Read what :meth:`save` wrote; None when the file does not exist."""
        path = Path(path)
        if not path.exists():
            return None
        table = pd.read_csv(path, index_col=0, keep_default_na=False)
        level = float(table.pop("level").iloc[0]) if len(table) else CLUSTER_LEVEL
        return cls(table, level)


def cluster_radiomics(
    rho: np.ndarray, names: Sequence[str], level: float = CLUSTER_LEVEL
) -> RadiomicClusters:
    """Cluster radiomic features by average linkage on ``1 - |rho|`` (``rho``: their features x features
    Spearman matrix) cut at ``1 - level``. A feature with undefined rho (constant) stays alone.

    Examples
    --------
    >>> rho = np.array([[1.0, 0.95, 0.1], [0.95, 1.0, 0.05], [0.1, 0.05, 1.0]])
    >>> names = ["original_firstorder_Mean", "original_firstorder_Median", "original_glcm_Contrast"]
    >>> cluster_radiomics(rho, names).table["cluster"].tolist()
    ['original_firstorder_Mean', 'original_firstorder_Mean', 'original_glcm_Contrast']
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if not 0 < level <= 1:
        raise Rad4XCNNError(f"the cluster level must lie in (0, 1], got {level}")
    names = [str(n) for n in names]
    rho = np.asarray(rho, dtype=np.float64)
    if rho.shape != (len(names), len(names)):
        raise Rad4XCNNError(f"a {rho.shape} rho matrix for {len(names)} radiomic features")
    similarity = np.nan_to_num(np.abs(rho), nan=0.0)
    np.fill_diagonal(similarity, 1.0)
    if len(names) > 1:
        distance = np.clip(1.0 - (similarity + similarity.T) / 2, 0.0, 1.0)
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(distance, checks=False), method="average")
        labels = fcluster(tree, t=1.0 - level + 1e-12, criterion="distance")
    else:
        labels = np.ones(len(names), dtype=int)
    rows = []
    for label in dict.fromkeys(labels.tolist()):
        members = np.flatnonzero(labels == label)
        block = similarity[np.ix_(members, members)]
        centrality = (block.sum(axis=1) - 1.0) / (len(members) - 1) if len(members) > 1 else np.ones(1)
        central = members[int(np.argmax(centrality))]  # ties: the first in table order
        signed = np.nan_to_num(rho[members, central], nan=1.0)
        for k, j in enumerate(members):
            rows.append(
                {
                    "radiomic_feature": names[j],
                    "cluster": names[central],
                    "family": family_of(names[central]),
                    "n_members": len(members),
                    "centrality": float(centrality[k]),
                    "sign": 1 if signed[k] >= 0 else -1,
                }
            )
    table = pd.DataFrame(rows).set_index("radiomic_feature").reindex(names)
    log.debug(
        "%d radiomic features form %d redundancy clusters at |rho| >= %g",
        len(names),
        table["cluster"].nunique(),
        level,
    )
    return RadiomicClusters(table, float(level))


@dataclass(frozen=True)
class PartnerGroup:
    """The partners of one deep feature that fall in one redundancy cluster."""

    cluster: str
    family: str
    members: tuple[str, ...]
    strongest: str
    rho: float
    direction: int

    def text(self) -> str:
        """``low average intensity (original_firstorder_Median and 36 similar)``: the cluster's meaning, with
        ``low`` when the deep feature is high where the cluster's central member is low."""
        meaning = short_meaning(self.cluster) or self.family
        word = "high" if self.direction > 0 else "low"
        others = len(self.members) - 1
        if self.cluster in self.members:
            who = self.cluster + (f" and {others} similar" if others else "")
        else:
            who = f"{len(self.members)} similar to {self.cluster}"
        return f"{word} {meaning} ({who})"


def group_partners(
    clusters: RadiomicClusters | None, partners: Sequence[str], rhos: Sequence[float]
) -> list[PartnerGroup]:
    """Group a deep feature's partners (with their rho) by redundancy cluster, strongest group first.

    Without clusters every partner is its own group.

    Examples
    --------
    >>> rho = np.array([[1.0, 0.95], [0.95, 1.0]])
    >>> clusters = cluster_radiomics(rho, ["original_firstorder_Mean", "original_firstorder_Median"])
    >>> partners = ["original_firstorder_Median", "original_firstorder_Mean"]
    >>> groups = group_partners(clusters, partners, [-0.7, -0.6])
    >>> groups[0].text()
    'low average intensity (original_firstorder_Mean and 1 similar)'
    """
    table = clusters.table if clusters is not None else None
    found: dict[str, list[tuple[str, float]]] = {}
    for name, rho in zip(partners, rhos, strict=True):
        known = table is not None and name in table.index and isinstance(table.at[name, "cluster"], str)
        key = table.at[name, "cluster"] if known else name
        found.setdefault(key, []).append((name, float(rho)))
    groups = []
    for key, members in found.items():
        strongest, rho = max(members, key=lambda m: abs(m[1]))
        sign = int(table.at[strongest, "sign"]) if table is not None and strongest in table.index else 1
        family = table.at[key, "family"] if table is not None and key in table.index else family_of(key)
        groups.append(
            PartnerGroup(
                cluster=key,
                family=str(family),
                members=tuple(m[0] for m in members),
                strongest=strongest,
                rho=rho,
                direction=1 if rho * sign >= 0 else -1,
            )
        )
    groups.sort(key=lambda g: -abs(g.rho))
    return groups


def groups_text(groups: Sequence[PartnerGroup], limit: int = 4) -> str:
    """``3 groups: low average intensity (original_firstorder_Median and 36 similar), ...``; at most
    ``limit`` groups are spelt out."""
    if not groups:
        return "no partner"
    head = f"{len(groups)} group{'s' if len(groups) != 1 else ''}: "
    shown = ", ".join(g.text() for g in groups[:limit])
    more = f", and {len(groups) - limit} more" if len(groups) > limit else ""
    return head + shown + more
