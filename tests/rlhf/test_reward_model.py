import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from tinygpt.data.tokenizer import EOT_ID
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.rlhf import reward_model as rm
from tinygpt.rlhf.tuning import lr_factor

MARK = 922  # the token that makes a continuation preferred in the synthetic pairs
pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_reward_model(seed: int = 0) -> rm.RewardModel:
    torch.manual_seed(seed)
    return rm.RewardModel(GPT(GPTConfig(vocab_size=1024, block_size=16, n_layer=1, n_head=2, n_embd=32)))


def synthetic_pairs(n: int, seed: int) -> Dataset:
    """Chosen continuations contain MARK somewhere, rejected ones do not."""
    rng = np.random.default_rng(seed)
    rows = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "chosen_score": [], "rejected_score": []}
    for _ in range(n):
        chosen = rng.integers(0, 50, 6).tolist()
        chosen[rng.integers(6)] = MARK
        rows["prompt_ids"].append(rng.integers(0, 50, 3).tolist())
        rows["chosen_ids"].append(chosen)
        rows["rejected_ids"].append(rng.integers(0, 50, 6).tolist())
        rows["chosen_score"].append(1.0)
        rows["rejected_score"].append(0.0)
    return Dataset.from_dict(rows)


def test_bradley_terry_loss_is_minus_log_sigmoid_of_the_margin():
    loss = rm.bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2)
    assert rm.bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))


def test_pad_sequences_right_pads_and_points_at_the_last_real_token():
    ids, last = rm.pad_sequences([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, EOT_ID, EOT_ID]]
    assert last.tolist() == [2, 0]


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert [lr_factor(s, 2, 6) for s in range(7)] == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])


def test_reward_model_learns_the_preference_and_normalises(tmp_path):
    model = tiny_reward_model()
    train = rm.pair_tensors(synthetic_pairs(128, seed=1))
    val = rm.pair_tensors(synthetic_pairs(48, seed=2))
    chosen, rejected = rm.all_rewards(model, val, 64, "fp32")
    assert np.all(chosen == 0) and np.all(rejected == 0)  # the zero head: every pair starts at log 2
    history = rm.train_reward_model(model, train, lr=3e-3, weight_decay=0.0, epochs=4, batch_size=16,
                                    warmup_steps=2, grad_clip=1.0, seed=0, precision="fp32")
    assert len(history) == 4 * 8 and history[0]["loss"] == pytest.approx(math.log(2))
    rm.fit_normalisation(model, train, 64, "fp32")
    chosen, rejected = rm.all_rewards(model, train, 64, "fp32")
    both = np.concatenate([chosen, rejected])
    assert both.mean() == pytest.approx(0.0, abs=1e-4) and both.std() == pytest.approx(1.0, abs=1e-4)
    metrics = rm.evaluate_pairs(model, val, 64, "fp32")
    assert metrics["accuracy"] > 0.9 and metrics["oracle_spearman"] > 0.6
    rm.save_reward_model(model, tmp_path)
    loaded = rm.load_reward_model(tmp_path)
    assert loaded.offset.item() == model.offset.item() and loaded.scale.item() == model.scale.item()
    assert np.allclose(rm.all_rewards(loaded, val, 64, "fp32")[0], rm.all_rewards(model, val, 64, "fp32")[0], atol=1e-5)
