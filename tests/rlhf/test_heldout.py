"""Held-out evaluation: standard errors by prompt, paired gains, and the fast val NLL."""
import numpy as np
import pytest
import torch

from tinygpt.eval.likelihood import split_nll
from tinygpt.model.config import GPTConfig
from tinygpt.model.shortlist import ShortlistGPT, TrainVocabulary
from tinygpt.rlhf.heldout import Evaluation, HeldOut, change, val_nll

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


def test_val_nll_is_split_nll_in_non_overlapping_windows():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    model = ShortlistGPT(config, TrainVocabulary.of(np.arange(100), 300)).to_full().eval()  # shared rows
    tokens = np.random.default_rng(0).integers(0, 300, 16 * 5 + 7)  # a shorter last window, unseen ids too
    expected = split_nll(model, tokens, 16, 16, batch_size=4).mean_nll
    assert val_nll(model, tokens, "fp32", batch_size=2) == pytest.approx(expected, abs=1e-5)
