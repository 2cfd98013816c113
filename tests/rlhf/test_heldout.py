"""Held-out evaluation: standard errors by prompt, paired gains and the one baseline."""
import numpy as np
import pytest
import torch

from tinygpt.core.errors import TinyGptError
from tinygpt.rlhf.heldout import EvalTask, Evaluation, HeldOut, change, reference_evaluation

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


def test_a_baseline_with_more_samples_per_prompt_pairs_by_prompt_means():
    # best_of_n's 4 reference samples per prompt against a policy's 2: each side's mean per prompt
    before = Evaluation({"report": held([0.0, 0.0, 0.0, 4.0, 1.0, 1.0, 1.0, 1.0], 4)}, 1.0, np.e)
    after = Evaluation({"report": held([2.0, 2.0, 3.0, 3.0], 2)}, 1.0, np.e)
    gains = change(before, after, "report")
    assert gains["oracle_mean"] == pytest.approx(((2 - 1) + (3 - 1)) / 2)
    assert gains["oracle_se"] == pytest.approx(np.std([1.0, 2.0], ddof=1) / np.sqrt(2))


def test_the_baseline_must_cover_every_held_out_prompt():
    task = EvalTask(None, {"report": torch.zeros(3, 4, dtype=torch.long)}, np.zeros(10), None, 8, None, "fp32",
                    frozenset())
    with pytest.raises(TinyGptError, match="scores.csv.*3 report prompts.*dvc repro best_of_n"):
        reference_evaluation(None, task, {"report": held([0.0] * 4, 2)})  # 2 prompts' samples for 3
