"""The reported point is chosen on the selection set within the budgets, and best-of-n is compared at equal KL."""
import numpy as np
import pandas as pd
import pytest

from tinygpt.core.stats import sem
from tinygpt.rlhf.best_of_n import against_best_of_n, analytic_kl, bootstrap_mean_se
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


def per_prompt(gold_by_n: dict[int, list[float]], heldout_by_n: dict[int, list[float]] | None = None):
    """A best_of_n.per_prompt_curve-shaped table: n -> each prompt's best-of-n gold."""
    return pd.DataFrame([{"prompt": prompt, "n": n, "kl": analytic_kl(n), "gold": g,
                          **({} if heldout_by_n is None else {"heldout_gold": heldout_by_n[n][prompt]})}
                         for n, golds in gold_by_n.items() for prompt, g in enumerate(golds)])


def test_against_best_of_n_pairs_the_prompts_at_the_policys_kl():
    curves = {"report": per_prompt({1: [0.0, 0.2], 2: [0.1, 0.3], 4: [0.3, 0.7]})}
    at = against_best_of_n(analytic_kl(2), {"gold": np.array([[0.35, 0.55]])}, curves)
    assert at["best_of_n_gold_gain_at_kl"] == pytest.approx(0.1)  # over n = 1 on the same prompts
    assert at["gain_over_best_of_n"] == pytest.approx(0.25)
    assert at["gain_over_best_of_n_se"] == pytest.approx(0.0, abs=1e-12)  # the same lead on every prompt
    assert not at["beyond_best_of_n_curve"] and at["best_of_n_max_kl"] == pytest.approx(analytic_kl(4))
    assert at["best_of_n_curve"] == "report" and at["best_of_n_prompts"] == 2
    mid = against_best_of_n((analytic_kl(2) + analytic_kl(4)) / 2, {"gold": np.array([[0.35, 0.55]])}, curves)
    assert mid["gain_over_best_of_n"] == pytest.approx(((0.35 - 0.2) + (0.55 - 0.5)) / 2)  # per prompt, linear in KL
    assert mid["gain_over_best_of_n_se"] > 0
    beyond = against_best_of_n(5.0, {"gold": np.array([[0.35, 0.55]])}, curves)  # past the curve: nothing
    assert beyond["beyond_best_of_n_curve"] and beyond["gain_over_best_of_n"] is None
    assert beyond["best_of_n_gold_gain_at_kl"] is None and beyond["best_of_n_curve"] is None


def test_a_policy_past_the_precise_curve_is_compared_on_the_deep_one():
    ns = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    curves = {"report": per_prompt({1: [0.0, 0.0, 0.3], 2: [0.1, 0.1, 0.4], 4: [0.3, 0.3, 0.6]}),
              "report_deep": per_prompt({n: [0.1 * i, 0.1 * i + 0.2] for i, n in enumerate(ns)})}  # 2 prompts
    policy = {"gold": np.array([[0.5, 0.7, 0.9]])}  # gains over the report curve's n = 1: 0.5, 0.7, 0.6
    at = against_best_of_n(analytic_kl(32), policy, curves)
    assert at["best_of_n_curve"] == "report_deep" and at["best_of_n_max_kl"] == pytest.approx(analytic_kl(256))
    assert at["best_of_n_prompts"] == 2 and at["best_of_n_gold_gain_at_kl"] == pytest.approx(0.5)
    assert at["gain_over_best_of_n"] == pytest.approx(0.6 - 0.5)  # every prompt's gain against the deep ones'
    assert at["gain_over_best_of_n_se"] > 0
    assert against_best_of_n(analytic_kl(4), policy, curves)["best_of_n_curve"] == "report"  # precise where it reaches


def test_against_best_of_n_on_the_held_out_gold_too():
    curves = {"report": per_prompt({1: [0.0], 2: [0.1], 4: [0.3]}, heldout_by_n={1: [0.0], 2: [1.0], 4: [2.0]})}
    policy = {"gold": np.array([[0.4]]), "heldout_gold": np.array([[1.5]])}
    at = against_best_of_n(analytic_kl(4), policy, curves)
    assert at["gain_over_best_of_n"] == pytest.approx(0.1)  # ahead on the gold it was tuned against ...
    assert at["heldout_gain_over_best_of_n"] == pytest.approx(-0.5)  # ... behind on the held-out one
    assert "heldout_gain_over_best_of_n" not in against_best_of_n(0.1, {"gold": np.array([[0.0]])}, curves)


def test_text_quality_is_compared_as_the_change_from_the_reference_on_the_same_prompts():
    # Prompt 1's reference repeats more words than prompt 0's: only changes on the same prompt compare.
    curves = {"report": per_prompt({1: [0.0, 0.2], 2: [0.1, 0.3], 4: [0.3, 0.7]})
              .assign(repeated_words=lambda t: np.where(t["prompt"] == 0, 0.02, 0.10) + 0.01 * np.log2(t["n"]))}
    policy = {"gold": np.array([[0.35, 0.55]]), "repeated_words": np.array([[0.05, 0.11]])}  # +0.03, +0.01
    at = against_best_of_n(analytic_kl(4), policy, curves)
    assert at["best_of_n_repeated_words_change_at_kl"] == pytest.approx(0.02)  # n = 4: two doublings, +0.01 each
    assert at["repeated_words_change_over_best_of_n"] == pytest.approx((0.03 + 0.01) / 2 - 0.02)
    assert at["repeated_words_change_over_best_of_n_se"] > 0
    assert "distinct_2_change_over_best_of_n" not in at  # a measure the curve lacks is not compared
    beyond = against_best_of_n(5.0, policy, curves)
    assert beyond["repeated_words_change_over_best_of_n"] is None


def test_the_bootstrap_error_covers_the_prompts_and_the_seeds():
    prompts = np.random.default_rng(0).normal(size=(1, 400))
    assert bootstrap_mean_se(prompts) == pytest.approx(sem(prompts[0]), rel=0.1)  # one seed: the prompts' error
    runs = prompts + np.array([[-1.0], [0.0], [1.0]])  # three runs a whole point apart
    assert bootstrap_mean_se(runs) > 5 * bootstrap_mean_se(prompts)  # the spread between seeds counts


def test_several_seeds_are_each_compared_at_their_own_kl():
    curves = {"report": per_prompt({1: [0.0, 0.0], 2: [0.2, 0.4], 4: [0.6, 0.8]})}
    policy = {"gold": np.array([[0.3, 0.5], [0.7, 0.9]])}  # seed 0 at n = 2's KL, seed 1 at n = 4's
    at = against_best_of_n(np.array([analytic_kl(2), analytic_kl(4)]), policy, curves)
    assert at["gain_over_best_of_n"] == pytest.approx(0.1)  # +0.1 on every prompt, for both seeds
    assert at["best_of_n_gold_gain_at_kl"] == pytest.approx((0.3 + 0.7) / 2)
    assert against_best_of_n(np.array([analytic_kl(2), 9.0]), policy, curves)["gain_over_best_of_n"] is None
