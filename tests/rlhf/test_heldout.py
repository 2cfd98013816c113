"""Held-out evaluation: standard errors by prompt and paired gains."""
import numpy as np
import pytest

from tinygpt.rlhf.heldout import Evaluation, HeldOut, change

pytestmark = pytest.mark.usefixtures("single_thread")


def held(gold, samples):
    gold = np.asarray(gold, dtype=float)
    return HeldOut([""] * len(gold), gold, gold * 2, np.zeros_like(gold), np.ones(len(gold)), samples)


def test_standard_errors_are_across_prompts_and_gains_are_paired():
    one = held([0.0, 1.0, 2.0, 5.0], samples=1)
    assert one.metrics()["oracle_se"] == pytest.approx(np.std([0, 1, 2, 5], ddof=1) / 2)  # plain SE
    two = held([0.0, 1.0, 2.0, 5.0], samples=2)  # prompts' means 0.5 and 3.5
    assert two.metrics()["oracle_se"] == pytest.approx(np.std([0.5, 3.5], ddof=1) / np.sqrt(2))
    before = Evaluation({"report": held([0.0, 0.0, 1.0, 1.0], 2)}, 1.0, np.e)
    after = Evaluation({"report": held([1.0, 1.0, 2.5, 2.5], 2)}, 1.1, np.exp(1.1))
    gains = change(before, after, "report")
    assert gains["oracle_mean"] == pytest.approx(1.25) and gains["oracle_se"] == pytest.approx(0.25)
    assert gains["val_perplexity_relative"] == pytest.approx(np.exp(0.1) - 1)
