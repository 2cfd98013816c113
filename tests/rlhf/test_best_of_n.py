"""Best-of-n's estimator equals brute force over every subset, and its KL is the known closed form; soft
best-of-n by hand, at its limits, and its KL bound against an exact enumeration."""
import itertools
import math

import numpy as np
import pytest

from tinygpt.core.errors import ParamsError
from tinygpt.rlhf.best_of_n import (analytic_kl, best_of_n_curve,
                                    best_of_n_values, per_prompt_curve,
                                    soft_best_of_n_curve, soft_kl_bound,
                                    soft_weights, subset_argmax_weights)
from tinygpt.rlhf.config import BestOfNParams


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


def test_curve_gains_are_against_n_1():
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(50, 16))
    gold = proxy + rng.normal(size=(50, 16))  # gold follows the proxy: best-of-n gains
    curve = best_of_n_curve(proxy, gold, 16)
    assert curve["n"].tolist() == [1, 2, 4, 8, 16] and curve["gold_gain"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert curve["gold_gain"].is_monotonic_increasing and (curve["gold_se"] > 0).all()
    assert math.isclose(curve["kl"].iloc[-1], analytic_kl(16))


def test_soft_best_of_n_by_hand_and_its_limits():
    proxy, gold = np.array([[0.0, 1.0, 3.0]]), np.array([[1.0, -2.0, 4.0]])
    w = np.exp(proxy / 0.5) / np.exp(proxy / 0.5).sum()
    row = soft_best_of_n_curve(proxy, gold, [0.5]).iloc[0]
    assert row["gold_gain"] == pytest.approx((w * gold).sum() - 1.0)
    assert row["proxy_gain"] == pytest.approx((w * proxy).sum() - 4 / 3)
    assert row["kl"] == pytest.approx(float(np.sum(w * np.log(3 * w))))
    rng = np.random.default_rng(2)
    proxy, gold = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    curve = soft_best_of_n_curve(proxy, gold, [0.1, 1e4, 1e-4, 1.0])
    assert curve["beta"].tolist() == [1e4, 1.0, 0.1, 1e-4]  # KL grows along the rows
    assert curve["kl"].is_monotonic_increasing and curve["kl"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert curve["gold_gain"].iloc[0] == pytest.approx(0.0, abs=1e-4)
    # beta -> 0 keeps the proxy's argmax: best-of-N with n = N, at KL log N
    assert curve["gold_gain"].iloc[-1] == pytest.approx((best_of_n_values(proxy, gold, 8) - gold.mean(1)).mean())
    assert curve["kl"].iloc[-1] == pytest.approx(math.log(8))


def test_soft_kl_bound_is_above_the_exact_kl_of_the_kept_sample():
    """Enumerate every ordered draw of N = 3 from a reference over 4 outcomes: the kept outcome's exact
    distribution has a KL to the reference no larger than the mean per-draw bound, and equal to it for no
    beta (the bound is loose when draws repeat an outcome)."""
    q = np.array([0.4, 0.3, 0.2, 0.1])
    reward = np.array([0.0, 1.0, -0.5, 2.0])
    for beta in (2.0, 0.5, 0.1):
        kept, bound = np.zeros(4), 0.0
        for draw in itertools.product(range(4), repeat=3):
            p_draw = np.prod(q[list(draw)])
            w = soft_weights(reward[list(draw)][None, :], beta)[0]
            for outcome, weight in zip(draw, w):
                kept[outcome] += p_draw * weight
            bound += p_draw * soft_kl_bound(w[None, :])[0]
        exact = float(np.sum(kept * np.log(kept / q)))
        assert kept.sum() == pytest.approx(1.0) and 0 < exact < bound


@pytest.mark.parametrize("betas, key", [([], r"best_of_n\.soft_betas = "), ([0.5, 0.0], r"best_of_n\.soft_betas\[1\] = "),
                                        (["x"], r"best_of_n\.soft_betas\[0\] = "), (0.5, r"best_of_n\.soft_betas = ")])
def test_soft_betas_must_be_positive_numbers_naming_the_entry(betas, key):
    BestOfNParams().validate()
    with pytest.raises(ParamsError, match=key):
        BestOfNParams(soft_betas=betas).validate()


def test_the_held_out_gold_is_scored_on_the_same_picks():
    rng = np.random.default_rng(2)
    proxy = rng.normal(size=(40, 8))
    gold = proxy + rng.normal(size=(40, 8))
    curve = best_of_n_curve(proxy, gold, 8, heldout_gold=2 * gold)  # a held-out gold that doubles the gold
    assert np.allclose(curve["heldout_gold_gain"], 2 * curve["gold_gain"])
    assert np.allclose(curve["heldout_gold_gain_se"], 2 * curve["gold_gain_se"])
    soft = soft_best_of_n_curve(proxy, gold, [1.0, 0.1], heldout_gold=-gold)
    assert np.allclose(soft["heldout_gold_gain"], -soft["gold_gain"])
    assert "heldout_gold_gain" not in best_of_n_curve(proxy, gold, 8)


def test_per_prompt_curve_averages_to_the_curve_and_picks_the_favourite_of_the_first_n_samples():
    rng = np.random.default_rng(2)
    proxy = rng.normal(size=(5, 8))
    gold = proxy + rng.normal(size=(5, 8))
    texts = [f"p{i}s{j}" for i in range(5) for j in range(8)]
    repeats = rng.uniform(size=(5, 8))  # a text-quality measure: the same picks' expectation
    table = per_prompt_curve(proxy, gold, 8, heldout_gold=2 * gold, texts=texts, quality={"repeated_words": repeats})
    curve = best_of_n_curve(proxy, gold, 8, quality={"repeated_words": repeats})
    assert table.groupby("n")["gold"].mean().to_numpy() == pytest.approx(curve["gold"])
    assert table.groupby("n")["repeated_words"].mean().to_numpy() == pytest.approx(curve["repeated_words"])
    assert table[table["n"] == 8]["repeated_words"].tolist() == pytest.approx(
        repeats[np.arange(5), proxy.argmax(axis=1)])  # n = N: the favourite's own value
    assert table.groupby("n")["kl"].first().to_numpy() == pytest.approx([analytic_kl(n) for n in (1, 2, 4, 8)])
    assert table[table["n"] == 1]["pick_text"].tolist() == [f"p{i}s0" for i in range(5)]  # n = 1: the first sample
    for row in table[table["n"] == 4].itertuples():
        j = int(proxy[row.prompt, :4].argmax())
        assert row.pick_text == f"p{row.prompt}s{j}" and row.pick_gold == gold[row.prompt, j]
        assert row.pick_heldout_gold == 2 * gold[row.prompt, j]
