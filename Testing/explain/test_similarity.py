"""Linear CKA: 1 for a table with itself, invariant to orthogonal transforms and isotropic scaling, at its
permutation baseline for independent tables, and the cka.csv rows of every kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from Rad4XCNNLogic.errors import Rad4XCNNError
from Rad4XCNNLogic.explain.similarity import CKA_COLUMNS, cka_permutation, cka_table, linear_cka
from Rad4XCNNLogic.names import layer_columns


def test_cka_of_a_table_with_itself_is_one():
    x = np.random.default_rng(0).normal(size=(40, 12))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 10))
    y = x[:, :4] @ rng.normal(size=(4, 6)) + rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    base = linear_cka(x, y)
    assert 0.1 < base < 0.95
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 3.0, y) == pytest.approx(base, rel=1e-10)  # centred
    # not invariant to an anisotropic scaling: the check above can fail
    assert linear_cka(x * np.linspace(0.1, 10, 10), y) != pytest.approx(base, rel=1e-3)


def test_cka_matches_the_feature_space_formula():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 7))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-12)


def test_independent_tables_sit_at_the_permutation_baseline():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 20)), rng.normal(size=(200, 15))
    cka, null, p = cka_permutation(x, y, permutations=300, seed=1)
    assert abs(cka - null) < 0.03
    assert p > 0.05
    related = x[:, :15] + 0.5 * y
    cka, null, p = cka_permutation(x, related, permutations=300, seed=1)
    assert cka > null + 0.2 and p == pytest.approx(1 / 301)
    assert np.isnan(cka_permutation(x, y, permutations=0)[2])


def test_cka_table_rows():
    rng = np.random.default_rng(4)
    ids = [f"c{i}" for i in range(60)]
    a2, a4 = rng.normal(size=(60, 8)), rng.normal(size=(60, 16))
    deep = pd.DataFrame(
        np.hstack([a2, a4, a4[:, :6] + 0.1 * rng.normal(size=(60, 6))]),
        index=ids,
        columns=layer_columns("a", "layer2", 8)
        + layer_columns("a", "layer4", 16)
        + [f"b_{i}" for i in range(6)],
    )
    rad = pd.DataFrame(1000 * a2[:, :3], index=ids, columns=["original_shape2D_Area", "x", "y"])
    ctrl = pd.DataFrame(rng.normal(size=(60, 8)), index=ids, columns=layer_columns("r", "layer2", 8))
    from Rad4XCNNLogic.explain.probes import layer_groups

    groups = layer_groups(deep.columns)
    table = cka_table(
        deep,
        rad,
        groups,
        control=ctrl,
        control_pairs={("a", "layer2"): ("r", "layer2")},
        control_groups=layer_groups(ctrl.columns),
        permutations=50,
    )
    assert list(table.columns) == list(CKA_COLUMNS)
    kinds = table.groupby("kind").size().to_dict()
    assert kinds == {"radiomics": 3, "layers": 1, "backbones": 2, "control": 1}
    rad_rows = table[table["kind"] == "radiomics"].set_index("layer_a")
    assert rad_rows.loc["layer2", "cka"] > rad_rows.loc["layer4", "cka"]  # the radiomics are layer2's
    assert rad_rows.loc["layer2", "p"] < 0.05
    b = table[table["kind"] == "backbones"].set_index("layer_a")
    assert b.loc["layer4", "cka"] > b.loc["layer2", "cka"]
    assert (table["n_cases"] == 60).all()
    with pytest.raises(Rad4XCNNError, match="at least 3 cases"):
        cka_table(deep.iloc[:2], None, groups, permutations=0)
