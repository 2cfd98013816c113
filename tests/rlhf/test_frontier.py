"""The reported point is chosen on the selection set within the budgets, and best-of-n is compared at equal KL."""
import numpy as np
import pandas as pd
import pytest

from tinygpt.rlhf.best_of_n import against_best_of_n, analytic_kl
from tinygpt.rlhf.frontier import select_point


def frontier_table():
    rows = []
    for step, kl, gain, ppl in ((0, 0.0, 0.0, 0.0), (10, 2.0, 0.2, 0.02), (20, 4.0, 0.5, 0.05),
                                (30, 7.0, 0.9, 0.06), (40, 5.0, 0.6, 0.2)):
        for held_out_set, shift in (("selection", 0.0), ("report", 0.3)):
            rows.append({"step": step, "set": held_out_set, "kl": kl + shift, "gold_gain": gain - shift,
                         "val_perplexity_relative": ppl})
    return pd.DataFrame(rows)


def test_selection_keeps_to_both_budgets_and_reads_only_the_selection_set():
    table = frontier_table()
    assert select_point(table, kl_budget=6.0, perplexity_budget=0.1) == 20  # 30: KL 7 > 6; 40: ppl +20%
    assert select_point(table, kl_budget=8.0, perplexity_budget=0.1) == 30
    assert select_point(table, kl_budget=1.0, perplexity_budget=0.1) == 0  # only the reference fits
    blind = table.copy()
    blind.loc[blind["set"] == "report", ["kl", "gold_gain", "val_perplexity_relative"]] = np.nan
    assert select_point(blind, 6.0, 0.1) == 20


def curve(ns, gains, se=0.0, **extra):
    return pd.DataFrame({"n": ns, "kl": [analytic_kl(n) for n in ns], "gold_gain": gains,
                         "gold_gain_se": [se] * len(ns), **extra})


def test_against_best_of_n_interpolates_at_the_policys_kl():
    curves = {"report": curve([1, 2, 4], [0.0, 0.1, 0.3], se=0.03)}
    at = against_best_of_n({"kl": analytic_kl(2), "gold_gain": 0.25, "gold_gain_se": 0.04}, curves)
    assert at["best_of_n_gold_gain_at_kl"] == pytest.approx(0.1) and at["gain_over_best_of_n"] == pytest.approx(0.15)
    assert at["gain_over_best_of_n_se"] == pytest.approx(0.05)  # both sides' errors
    assert not at["beyond_best_of_n_curve"] and at["best_of_n_max_kl"] == pytest.approx(analytic_kl(4))
    assert at["best_of_n_curve"] == "report"
    beyond = against_best_of_n({"kl": 5.0, "gold_gain": 0.2, "gold_gain_se": 0.04}, curves)  # past it: none
    assert beyond["beyond_best_of_n_curve"] and beyond["gain_over_best_of_n"] is None
    assert beyond["best_of_n_gold_gain_at_kl"] is None and beyond["best_of_n_curve"] is None


def test_a_policy_past_the_precise_curve_is_compared_on_the_deep_one():
    curves = {"report": curve([1, 2, 4], [0.0, 0.1, 0.3], se=0.01),
              "report_deep": curve([1, 2, 4, 8, 16, 32, 64, 128, 256], [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                   se=0.05)}
    at = against_best_of_n({"kl": analytic_kl(32), "gold_gain": 0.5, "gold_gain_se": 0.0}, curves)
    assert at["best_of_n_curve"] == "report_deep" and at["best_of_n_max_kl"] == pytest.approx(analytic_kl(256))
    assert at["gain_over_best_of_n"] == pytest.approx(-0.1) and at["gain_over_best_of_n_se"] == pytest.approx(0.05)
    inside = against_best_of_n({"kl": analytic_kl(4), "gold_gain": 0.5, "gold_gain_se": 0.0}, curves)
    assert inside["best_of_n_curve"] == "report"  # the precise curve wherever it reaches


def test_against_best_of_n_on_the_held_out_gold_too():
    curves = {"report": curve([1, 2, 4], [0.0, 0.1, 0.3], heldout_gold_gain=[0.0, 1.0, 2.0],
                              heldout_gold_gain_se=[0.0, 0.1, 0.1])}
    at = against_best_of_n({"kl": analytic_kl(4), "gold_gain": 0.4, "gold_gain_se": 0.0, "heldout_gold_gain": 1.5,
                            "heldout_gold_gain_se": 0.0}, curves)
    assert at["gain_over_best_of_n"] == pytest.approx(0.1)  # ahead on the gold it was tuned against ...
    assert at["heldout_gain_over_best_of_n"] == pytest.approx(-0.5)  # ... behind on the held-out one
    assert "heldout_gain_over_best_of_n" not in against_best_of_n({"kl": 0.1, "gold_gain": 0.0, "gold_gain_se": 0.0},
                                                                  curves)
