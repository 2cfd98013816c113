"""Calibration: binning at the edges, ECE/MCE/adaptive ECE/Brier on hand-worked cases, an independent
ECE implementation, and the exact temperature fit on data whose true temperature is known."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinygpt.eval import calibration as cal
from tinygpt.eval.likelihood import LogitHead


def test_bin_index_edges_belong_to_the_bin_they_close():
    m = 5
    conf = np.array([0.0, 1e-9, 0.2, 0.2 + 1e-9, 0.4, 0.6, 0.8, 0.8 + 1e-9, 1.0 - 1e-9, 1.0])
    assert cal.bin_index(conf, m).tolist() == [0, 0, 0, 1, 1, 2, 3, 4, 4, 4]
    # Every k/M for a 15-bin layout, as the bins' own bounds compute it.
    edges = np.arange(1, 16) / 15
    assert cal.bin_index(edges, 15).tolist() == list(range(15))


def test_confidence_one_and_zero_are_counted():
    bins = cal.reliability_bins(np.array([0.0, 1.0, 1.0]), np.array([0, 1, 0]), 10)
    assert bins["count"].sum() == 3
    assert bins["count"].iloc[0] == 1 and bins["count"].iloc[-1] == 2
    assert bins["accuracy"].iloc[-1] == 0.5 and bins["confidence"].iloc[-1] == 1.0


def test_perfectly_calibrated_has_zero_error():
    conf = np.array([0.75] * 8 + [0.5] * 4)
    correct = np.array([1] * 6 + [0] * 2 + [1, 0, 1, 0])
    c = cal.calibrate(conf, correct, 10)
    assert c.ece == pytest.approx(0.0, abs=1e-12)
    assert c.mce == pytest.approx(0.0, abs=1e-12)
    assert c.brier == pytest.approx((6 * 0.25**2 + 2 * 0.75**2 + 4 * 0.5**2) / 12)


def test_all_wrong_at_confidence_one_has_error_one():
    c = cal.calibrate(np.ones(7), np.zeros(7), 15)
    assert c.ece == 1.0 and c.mce == 1.0 and c.adaptive_ece == 1.0 and c.brier == 1.0
    assert c.bins["count"].tolist() == [0] * 14 + [7]


def test_worked_example_with_mixed_bins():
    conf = np.array([0.1, 0.3, 0.35, 0.9, 0.95, 1.0])
    correct = np.array([0, 1, 0, 1, 1, 0])
    bins = cal.reliability_bins(conf, correct, 5)  # (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]
    assert bins["count"].tolist() == [1, 2, 0, 0, 3]
    assert bins["confidence"].iloc[1] == pytest.approx(0.325)
    assert bins["accuracy"].iloc[4] == pytest.approx(2 / 3)
    # gaps 0.1, 0.175, 0.95 - 2/3 = 0.28333; weights 1, 2, 3 of 6
    assert cal.expected_calibration_error(bins) == pytest.approx((0.1 + 2 * 0.175 + 3 * (0.95 - 2 / 3)) / 6)
    assert cal.expected_calibration_error(bins) == pytest.approx(1.3 / 6)
    assert cal.max_calibration_error(bins) == pytest.approx(0.95 - 2 / 3)
    # equal mass, 3 bins: {.1,.3} {.35,.9} {.95,1}: gaps .3, .125, .475
    assert cal.adaptive_calibration_error(conf, correct, 3) == pytest.approx(0.3)
    assert cal.brier_score(conf, correct) == pytest.approx((0.01 + 0.49 + 0.1225 + 0.01 + 0.0025 + 1.0) / 6)


def reference_ece(conf, correct, n_bins):
    """A second ECE, written with explicit interval tests: bin m holds lo < c <= hi, bin 1 also 0."""
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (m == 1 and c == 0.0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) * abs(acc - mean_conf)
    return total / len(conf)


@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_ece_matches_an_independent_implementation(n_bins):
    rng = np.random.default_rng(n_bins)
    conf = rng.beta(2, 2, size=500)
    conf[:n_bins + 1] = np.arange(n_bins + 1) / n_bins  # every bin edge, 0 and 1 included
    correct = (rng.random(500) < conf ** 1.5).astype(int)
    got = cal.expected_calibration_error(cal.reliability_bins(conf, correct, n_bins))
    assert got == pytest.approx(reference_ece(conf.tolist(), correct.tolist(), n_bins), abs=1e-12)
    assert got > 0.01  # the data are miscalibrated on purpose, so the check compares non-trivial numbers


def test_adaptive_ece_with_one_bin_is_the_global_gap():
    rng = np.random.default_rng(0)
    conf, correct = rng.random(101), rng.random(101) < 0.3
    assert cal.adaptive_calibration_error(conf, correct, 1) == pytest.approx(abs(correct.mean() - conf.mean()))


# ---------------------------------------------------------------- temperature scaling


def synthetic(n=8000, width=8, vocab=32, scale=1.0, seed=0):
    """Hidden states, a linear head, and targets drawn from softmax(head(h)): calibrated at T=1, so a head
    scaled by `scale` is over-confident by exactly that temperature."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, width, generator=g)
    weight = torch.randn(vocab, width, generator=g) * 0.7
    probs = torch.softmax(hidden @ weight.T, dim=-1)
    targets = torch.multinomial(probs, 1, generator=g).squeeze(-1)
    return hidden, targets, LogitHead(lambda h: (h @ weight.T * scale).float())


def direct_nll(head, hidden, targets, temperature):
    return float(F.cross_entropy(head(hidden) / temperature, targets))


def test_fit_recovers_the_known_temperature_and_is_a_minimum():
    hidden, targets, head = synthetic(scale=3.0)
    fit = cal.fit_temperature(head, hidden, targets)
    assert fit.converged and fit.iterations < 15
    assert fit.temperature == pytest.approx(3.0, rel=0.08)
    best = direct_nll(head, hidden, targets, fit.temperature)
    assert fit.nll == pytest.approx(best, rel=1e-5)
    for factor in (0.99, 1.01):
        assert direct_nll(head, hidden, targets, fit.temperature * factor) > best


def test_fit_on_a_calibrated_head_stays_near_one():
    hidden, targets, head = synthetic(scale=1.0, seed=1)
    assert cal.fit_temperature(head, hidden, targets).temperature == pytest.approx(1.0, rel=0.08)


def test_fit_of_an_under_confident_head_sharpens_it():
    hidden, targets, head = synthetic(scale=0.25, seed=2)
    assert cal.fit_temperature(head, hidden, targets).temperature == pytest.approx(0.25, rel=0.08)


def test_derivatives_match_finite_differences():
    hidden, targets, head = synthetic(n=500, seed=3)
    beta, eps = 0.7, 1e-3
    f, g, h = cal.nll_derivatives(head, hidden, targets, beta)
    f_plus, g_plus, _ = cal.nll_derivatives(head, hidden, targets, beta + eps)
    f_minus, g_minus, _ = cal.nll_derivatives(head, hidden, targets, beta - eps)
    assert f == pytest.approx(direct_nll(head, hidden, targets, 1 / beta), rel=1e-5)
    assert g == pytest.approx((f_plus - f_minus) / (2 * eps), rel=1e-3)
    assert h == pytest.approx((g_plus - g_minus) / (2 * eps), rel=1e-3)


def test_scaling_lowers_nll_and_keeps_accuracy():
    hidden, targets, head = synthetic(scale=4.0, seed=4)
    fit = cal.fit_temperature(head, hidden[:4000], targets[:4000])
    before = cal.scaled_stats(head, hidden[4000:], targets[4000:], 1.0)
    after = cal.scaled_stats(head, hidden[4000:], targets[4000:], fit.temperature)
    assert after.nll.mean() < before.nll.mean() - 0.1
    assert np.array_equal(after.correct, before.correct)
    ece = [cal.calibrate(s.confidence, s.correct, 15).ece for s in (before, after)]
    assert ece[1] < ece[0] / 2
    assert math.isclose(before.nll.mean(), direct_nll(head, hidden[4000:], targets[4000:], 1.0), rel_tol=1e-5)
