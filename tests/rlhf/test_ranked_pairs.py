"""Reward-ranked pairs for DPO: per prompt the reward model's best reference sample over its worst (and
the next ranks inwards), seeded, ties dropped, in the pair layout DPO reads."""
import numpy as np
import pytest
import torch

from tinygpt.eval.text_quality import quality_values
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.rlhf import dpo
from tinygpt.rlhf import reward_model as rm
from tinygpt.rlhf.heldout import scored_rollouts
from tinygpt.rlhf.ranked_pairs import ranked_pairs, reward_ranked_pairs

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_models():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=1024, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    reward_model = rm.RewardModel(GPT(config)).eval()
    torch.nn.init.normal_(reward_model.head.weight)  # a zero head (the untrained start) ties every sample
    return GPT(config).eval(), reward_model


def test_ranked_pairs_pick_by_reward_and_drop_ties():
    prompts = np.array([[1, 2], [3, 4], [5, 6]])
    ids = [[10], [11], [12], [20], [21], [22], [30], [31], [32]]
    rewards = np.array([[0.1, 0.9, -0.5], [0.0, 0.0, 0.0], [2.0, 1.0, 3.0]])
    pairs = ranked_pairs(prompts, ids, rewards)
    assert pairs["prompt_ids"] == [[1, 2], [5, 6]]  # the second prompt's samples all tie
    assert pairs["chosen_ids"] == [[11], [32]] and pairs["rejected_ids"] == [[12], [31]]
    assert pairs["chosen_score"] == pytest.approx([0.9, 3.0]) and pairs["rejected_score"] == pytest.approx([-0.5, 1.0])
    assert ranked_pairs(prompts, ids, rewards, pairs_per_prompt=5)["chosen_ids"] == [[11], [32]]  # 3 // 2 = 1


def test_more_pairs_per_prompt_go_inwards_by_rank_and_use_each_sample_once():
    prompts = np.array([[1, 2], [3, 4]])
    ids = [[10 + i] for i in range(6)] + [[20 + i] for i in range(6)]
    rewards = np.array([[0.5, -1.0, 2.0, 0.0, 1.0, -2.0],  # ranks: 2, 4, 0, 3, 1, 5
                        [1.0, 1.0, 1.0, 1.0, 3.0, -3.0]])  # the inner ranks tie
    pairs = ranked_pairs(prompts, ids, rewards, pairs_per_prompt=3)
    assert pairs["chosen_ids"] == [[12], [14], [10], [24]] and pairs["rejected_ids"] == [[15], [11], [13], [25]]
    assert all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"]))
    first = pairs.filter(lambda row: row["prompt_ids"] == [1, 2])
    assert len(set(map(tuple, list(first["chosen_ids"]) + list(first["rejected_ids"])))) == 6


def test_reward_ranked_pairs_are_seeded_and_ranked_by_the_reward_model():
    reference, reward_model = tiny_models()
    prompts = np.random.default_rng(0).integers(0, 1024, (6, 4))
    args = (reference, reward_model, prompts, 4, 6, 1.0)
    with torch.no_grad():  # the rewards reward_ranked_pairs ranks by
        scored = list(scored_rollouts(reference, reward_model, torch.as_tensor(prompts), 4, 6, 1.0, seed=3,
                                      precision="fp32", batch_size=5))
    assert [len(reward) for _, reward in scored] == [5, 5, 5, 5, 4]  # batches cut across prompts
    assert sum(len(rollout.response_ids()) for rollout, _ in scored) == 24
    rewards = torch.cat([reward for _, reward in scored]).numpy().reshape(6, 4)
    pairs = reward_ranked_pairs(*args, seed=3, precision="fp32", batch_size=5)
    again = reward_ranked_pairs(*args, seed=3, precision="fp32", batch_size=5)
    other = reward_ranked_pairs(*args, seed=4, precision="fp32", batch_size=5)
    assert pairs["chosen_ids"] == again["chosen_ids"] and pairs["rejected_ids"] == again["rejected_ids"]
    assert pairs["chosen_ids"] != other["chosen_ids"]
    assert len(pairs) == 6 and all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"]))
    assert pairs["chosen_score"] == pytest.approx(rewards.max(axis=1).tolist())
    two = reward_ranked_pairs(*args, seed=3, precision="fp32", batch_size=5, pairs_per_prompt=2)
    assert len(two) == 12 and two.select(range(0, 12, 2))["chosen_ids"] == pairs["chosen_ids"]
    # DPO reads them: one prompt length, masks over each continuation's own ids
    data = dpo.preference_tensors(pairs)
    assert data.prompt_len == 4 and data.chosen_mask.sum(dim=1).tolist() == [len(c) for c in pairs["chosen_ids"]]
    summary = dpo.pair_summary(pairs)
    assert summary["pairs"] == 6 and summary["chosen_score_mean"] > summary["rejected_score_mean"]


def test_a_repetition_penalty_ranks_by_the_reward_less_that_multiple_of_the_repetition():
    reference, reward_model = tiny_models()
    with torch.no_grad():  # " the", " and", " of" half the time: the continuations repeat words
        reference.add_logit_bias()[[262, 290, 286]] = 5.0
    prompts = np.random.default_rng(0).integers(0, 1024, (6, 4))
    args = (reference, reward_model, prompts, 4, 10, 1.0)
    with torch.no_grad():
        scored = list(scored_rollouts(reference, reward_model, torch.as_tensor(prompts), 4, 10, 1.0, seed=3,
                                      precision="fp32", batch_size=8))
    rewards = torch.cat([reward for _, reward in scored]).numpy()
    texts = [text for rollout, _ in scored for text in rollout.texts()]
    repeats = quality_values(texts, frozenset())["repeated_words"]
    assert repeats.max() > 0  # some continuation repeats a word, so the penalty has something to move
    penalised = reward_ranked_pairs(*args, seed=3, precision="fp32", batch_size=8, repetition_penalty=10.0)
    shaped = (rewards - 10.0 * repeats).reshape(6, 4)
    assert penalised["chosen_score"] == pytest.approx(shaped.max(axis=1).tolist(), abs=1e-5)
    assert penalised["rejected_score"] == pytest.approx(shaped.min(axis=1).tolist(), abs=1e-5)
    plain = reward_ranked_pairs(*args, seed=3, precision="fp32", batch_size=8, repetition_penalty=0.0)
    assert plain["chosen_score"] == pytest.approx(rewards.reshape(6, 4).max(axis=1).tolist(), abs=1e-5)
