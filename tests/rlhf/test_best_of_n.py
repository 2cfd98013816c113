"""Best-of-n's estimator equals brute force over every subset, and its KL is the known closed form."""
import itertools
import math

import numpy as np
import pytest

from tinygpt.rlhf.best_of_n import (analytic_kl, best_of_n_curve,
                                    best_of_n_values, gold_gain_at,
                                    subset_argmax_weights)


def brute_force(proxy_row, gold_row, n):
    """Mean gold of the first proxy-maximum over all n-subsets (in sample order, as a real draw picks)."""
    picks = []
    for subset in itertools.combinations(range(len(proxy_row)), n):
        best = max(subset, key=lambda i: (proxy_row[i], -i))  # highest proxy; of ties, the earliest
        picks.append(gold_row[best])
    return np.mean(picks)


def test_estimator_equals_enumerating_every_subset_ties_included():
    rng = np.random.default_rng(0)
    proxy = np.round(rng.normal(size=(3, 6)), 1)
    proxy[0, 1] = proxy[0, 4]  # a tie
    gold = rng.normal(size=(3, 6))
    for n in range(1, 7):
        expected = [brute_force(p, g, n) for p, g in zip(proxy, gold)]
        assert best_of_n_values(proxy, gold, n) == pytest.approx(expected, abs=1e-12)
    assert best_of_n_values(proxy, gold, 1) == pytest.approx(gold.mean(axis=1))
    assert subset_argmax_weights(6, 3).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 7 samples"):
        subset_argmax_weights(6, 7)


def test_tie_breaking_keeps_the_earliest_sample_like_a_draw():
    # Two samples with equal proxy: a best-of-2 over both keeps the first one.
    assert best_of_n_values(np.array([[1.0, 1.0]]), np.array([[5.0, 7.0]]), 2) == pytest.approx([5.0])


def test_analytic_kl_matches_the_exact_kl_of_best_of_n_on_many_distinct_outcomes():
    m = 100_000
    i = np.arange(1, m + 1)
    for n in (2, 4, 16, 64):
        p = (i / m) ** n - ((i - 1) / m) ** n  # best-of-n of a uniform over m ranked outcomes
        exact = float(np.sum(p * np.log(p * m)))
        assert analytic_kl(n) == pytest.approx(exact, abs=1e-2)
    assert [round(analytic_kl(n), 2) for n in (4, 8, 16, 32)] == [0.64, 1.20, 1.84, 2.50]
    assert analytic_kl(1) == 0.0


def test_curve_gains_are_against_n_1_and_interpolation_flags_extrapolation():
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(50, 16))
    gold = proxy + rng.normal(size=(50, 16))  # gold follows the proxy: best-of-n gains
    curve = best_of_n_curve(proxy, gold, 16)
    assert curve["n"].tolist() == [1, 2, 4, 8, 16] and curve["gold_gain"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert curve["gold_gain"].is_monotonic_increasing and (curve["gold_se"] > 0).all()
    gain, beyond = gold_gain_at(curve, curve["kl"].iloc[2])
    assert gain == pytest.approx(curve["gold_gain"].iloc[2]) and not beyond
    mid = (curve["kl"].iloc[1] + curve["kl"].iloc[2]) / 2
    assert gold_gain_at(curve, mid)[0] == pytest.approx(curve["gold_gain"].iloc[1:3].mean())
    assert gold_gain_at(curve, 10.0) == (pytest.approx(curve["gold_gain"].max()), True)
    assert math.isclose(curve["kl"].iloc[-1], analytic_kl(16))
