"""On-policy preference pairs for DPO: continuations sampled from the reference, ranked by the reward model.

The preference pairs of the preferences stage are what a labeller saw; DPO on them learns the labeller's
preferences, but nothing makes it spend its KL where the reward model (PPO's target, best-of-n's judge)
sees a difference. Here each train prompt gets `samples` continuations from the reference itself, and the
one the reward model scores highest is chosen over the one it scores lowest (and optionally the second
best over the second worst, and so on) (RSO, Liu et al. 2024; the
online-DPO recipes of Xiong et al. 2024 rank the same way). The oracle is never consulted: the only
judge is the reward model, as for PPO, so the two compare.

With a repetition penalty the ranking score is the reward minus that multiple of the continuation's
repeated-word share (tinygpt.eval.text_quality): the reward model scores "good good my lord good" high,
and DPO, fitting the soft labels of the shaped scores, aims at PPO's optimum for the shaped reward.
"""
from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset

from tinygpt.core.modes import eval_mode
from tinygpt.data.tokenizer import decode
from tinygpt.eval.text_quality import quality_values
from tinygpt.model.gpt import GPT
from tinygpt.rlhf.heldout import scored_rollouts
from tinygpt.rlhf.preferences import PAIR_FEATURES
from tinygpt.rlhf.reward_model import RewardModel


def ranked_pairs(prompt_ids: np.ndarray, ids: list[list[int]], rewards: np.ndarray, pairs_per_prompt: int = 1) -> Dataset:
    """Pairs of each prompt's samples by reward rank: the best over the worst, the second best over the
    second worst, and so on, `pairs_per_prompt` of them (at most samples // 2, so no sample is in two
    pairs). One pair per prompt shows DPO only the extremes; samples // 2 pairs pin down where every sample
    should move, which with soft labels leaves the policy less room to drift. A pair whose two samples
    score the same is dropped. Scores are the rewards, not an oracle's."""
    samples = rewards.shape[1]
    rows: dict[str, list] = {name: [] for name in PAIR_FEATURES}
    for p, prompt in enumerate(prompt_ids.tolist()):
        order = np.argsort(-rewards[p], kind="stable")
        for rank in range(min(pairs_per_prompt, samples // 2)):
            best, worst = int(order[rank]), int(order[-1 - rank])
            if rewards[p, best] == rewards[p, worst]:
                continue
            chosen, rejected = ids[p * samples + best], ids[p * samples + worst]
            for column, value in (
                ("prompt", decode(prompt)), ("prompt_ids", prompt),
                ("chosen", decode(chosen)), ("chosen_ids", chosen), ("chosen_score", float(rewards[p, best])),
                ("rejected", decode(rejected)), ("rejected_ids", rejected),
                ("rejected_score", float(rewards[p, worst])),
            ):
                rows[column].append(value)
    return Dataset.from_dict(rows, features=PAIR_FEATURES)


@torch.no_grad()
def reward_ranked_pairs(
    model: GPT, reward_model: RewardModel, prompt_ids: np.ndarray, samples: int, max_new_tokens: int,
    temperature: float, seed: int, precision: str, batch_size: int, pairs_per_prompt: int = 1,
    repetition_penalty: float = 0.0,
) -> Dataset:
    """DPO's training pairs: `samples` continuations per prompt drawn from `model` (prompt-major, seeded)
    and ranked by their reward-model scores less `repetition_penalty` times their repeated-word share
    (see the module)."""
    prompts = torch.as_tensor(prompt_ids, device=next(model.parameters()).device)
    ids, texts, rewards = [], [], []
    with eval_mode(model):
        for rollout, reward in scored_rollouts(model, reward_model, prompts, samples, max_new_tokens, temperature,
                                               seed, precision, batch_size):
            rewards.append(reward)
            ids += rollout.response_ids()
            texts += rollout.texts()
    scores = torch.cat(rewards).numpy()
    if repetition_penalty > 0:  # repeated_words needs no vocabulary: `known` only matters for unseen_words
        scores = scores - repetition_penalty * quality_values(texts, frozenset())["repeated_words"]
    return ranked_pairs(prompt_ids, ids, scores.reshape(len(prompt_ids), samples), pairs_per_prompt)
