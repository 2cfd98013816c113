"""Evaluating RLHF on held-out prompts, before (the reference) and after (the policy), with the same seed:
oracle ("gold") score, reward-model ("proxy") score, KL to the reference, a table of samples, and the
figures of PPO's curves (tinygpt.pipeline.outputs.rlhf writes them)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from tinygpt.core import figures
from tinygpt.core.device import autocast
from tinygpt.core.errors import TinyGptError
from tinygpt.core.stats import sem
from tinygpt.data.tokenizer import decode
from tinygpt.eval.likelihood import val_nll
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import FullHead, output_head
from tinygpt.rlhf.config import HeldOutParams
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.reward_model import RewardModel
from tinygpt.rlhf.rollout import Rollout, sample, token_logprobs

CURVES = ["reward_model_score", "gold_score", "kl", "beta", "entropy", "policy_loss", "value_loss",
          "clip_fraction", "approx_kl", "explained_variance", "ptx_loss", "response_tokens"]


@dataclass
class HeldOut:
    """One model's continuations of one set of held-out prompts (prompt-major) and their scores."""

    texts: list[str]
    gold: np.ndarray  # oracle score per continuation
    reward: np.ndarray  # normalised reward-model score
    kl: np.ndarray  # sum over the continuation of log pi - log pi_ref, nats
    tokens: np.ndarray  # response length, up to and including an end-of-text
    samples_per_prompt: int
    heldout_gold: np.ndarray | None = None  # the oracle's held-out gold per continuation (oracles.HELDOUT_GOLD)

    def per_prompt(self, values: np.ndarray) -> np.ndarray:
        """Each prompt's mean: the unit of the standard errors, since a prompt's samples are correlated."""
        return values.reshape(-1, self.samples_per_prompt).mean(axis=1)

    def scores(self) -> dict[str, np.ndarray]:
        """Every score by its metric name: the gold ("oracle"), the held-out gold if any, the proxy."""
        held = {} if self.heldout_gold is None else {"heldout_oracle": self.heldout_gold}
        return {"oracle": self.gold, **held, "reward_model": self.reward}

    def metrics(self) -> dict[str, float]:
        out = {}
        for name, values in {**self.scores(), "kl": self.kl}.items():
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_se"] = sem(self.per_prompt(values))
        return {**out, "response_tokens_mean": float(self.tokens.mean())}


def scored_rollouts(
    model: GPT, reward_model: RewardModel, prompts: torch.Tensor, samples: int, max_new_tokens: int,
    temperature: float, seed: int, precision: str, batch_size: int, head: FullHead | None = None,
) -> Iterator[tuple[Rollout, torch.Tensor]]:
    """`samples` continuations per prompt from `model` (prompt-major, seeded), `batch_size` at a time: each
    batch's rollout and its normalised reward-model scores (on the CPU). Call it under torch.no_grad.
    `head` samples: by default the model's compact head, built now (exact for the weights as they are)."""
    generator = torch.Generator(prompts.device).manual_seed(seed)
    head = head or output_head(model, compact=True)
    for chunk in prompts.repeat_interleave(samples, dim=0).split(batch_size):
        rollout = sample(model, chunk, max_new_tokens, temperature, generator, precision, head)
        with autocast(prompts.device, precision):
            reward = reward_model(rollout.sequences, rollout.last_index).float().cpu()
        yield rollout, reward


@torch.no_grad()
def held_out(
    model: GPT, ref: GPT, reward_model: RewardModel, prompts: torch.Tensor, samples: int, max_new_tokens: int,
    temperature: float, seed: int, oracle: Oracle, precision: str, batch_size: int,
) -> HeldOut:
    """Sample `samples` continuations per prompt from `model` (seeded) and score them."""
    heads = output_head(model, compact=True), output_head(ref, compact=True)
    texts, ids, rewards, kls = [], [], [], []
    for rollout, reward in scored_rollouts(model, reward_model, prompts, samples, max_new_tokens, temperature,
                                           seed, precision, batch_size, heads[0]):
        if model is ref:  # the reference against itself (best-of-n's samples): KL 0, no need to compute it
            log_ratio = torch.zeros_like(rollout.mask)
        else:
            logps = [token_logprobs(m, rollout.sequences, rollout.prompt_len, temperature, precision, h)
                     for m, h in ((model, heads[0]), (ref, heads[1]))]
            log_ratio = logps[0] - logps[1]
        rewards.append(reward)
        kls.append((log_ratio * rollout.mask).sum(dim=1).cpu())
        texts += rollout.texts()
        ids += rollout.response_ids()
    return HeldOut(
        texts, np.asarray(oracle.scores(texts, ids)), torch.cat(rewards).numpy(), torch.cat(kls).numpy(),
        np.asarray([len(row) for row in ids]), samples, oracle.heldout_scores(texts),
    )


@dataclass
class EvalTask:
    """What every held-out evaluation holds fixed: the prompt sets, seed, scorers and the val split."""

    reward_model: RewardModel
    prompts: dict[str, torch.Tensor]  # "selection" and "report": (n, prompt_len) held-out prompts
    val_tokens: np.ndarray
    heldout_params: HeldOutParams
    max_new_tokens: int
    oracle: Oracle
    precision: str
    known_words: frozenset[str]  # the train split's words: text quality's unseen_words (eval.text_quality)


@dataclass
class Evaluation:
    """One model on every held-out set, and its perplexity on the whole val split."""

    sets: dict[str, HeldOut]
    val_loss: float
    val_perplexity: float

    def metrics(self, held_out_set: str) -> dict[str, float]:
        return {**self.sets[held_out_set].metrics(), "val_loss": self.val_loss, "val_perplexity": self.val_perplexity}


def evaluate_policy(model: GPT, ref: GPT, task: EvalTask) -> Evaluation:
    """Held-out continuations of each set (the same seed for every model) and the val perplexity."""
    settings = task.heldout_params
    sets = {
        name: held_out(
            model, ref, task.reward_model, prompts, settings.samples_per_prompt, task.max_new_tokens,
            settings.temperature, settings.seed, task.oracle, task.precision, settings.batch_size,
        )
        for name, prompts in task.prompts.items()
    }
    loss = val_nll(model, task.val_tokens, task.precision)
    return Evaluation(sets, loss, math.exp(loss))


def reference_evaluation(ref: GPT, task: EvalTask, samples: dict[str, HeldOut]) -> Evaluation:
    """The one baseline of every method's gain: the best_of_n stage's reference samples of each held-out
    set (best_of_n.max_n per prompt, so the reference's mean is measured once, closely, for all methods)
    and the reference's val perplexity."""
    for name, prompts in task.prompts.items():
        if name not in samples or len(samples[name].gold) != len(prompts) * samples[name].samples_per_prompt:
            raise TinyGptError(f"the best_of_n stage's reference samples (data/best_of_n/scores.csv) do not "
                               f"cover the {len(prompts)} {name} prompts: rerun it (dvc repro best_of_n)")
    loss = val_nll(ref, task.val_tokens, task.precision)
    return Evaluation({name: samples[name] for name in task.prompts}, loss, math.exp(loss))


def change(before: Evaluation, after: Evaluation, held_out_set: str) -> dict[str, float]:
    """What finetuning changed on one set: score gains with their paired standard errors (per prompt: the
    same prompts before and after, each side's mean over its own samples of the prompt) and the relative
    change in val perplexity."""
    b, a = before.sets[held_out_set], after.sets[held_out_set]
    out = {}
    for name, values in a.scores().items():
        if name in b.scores():  # a held-out gold is compared only where both sides have it
            gain = a.per_prompt(values) - b.per_prompt(b.scores()[name])
            out[f"{name}_mean"], out[f"{name}_se"] = float(gain.mean()), sem(gain)
    return {**out, "kl_mean": float(a.kl.mean()),
            "val_perplexity_relative": after.val_perplexity / before.val_perplexity - 1.0}


def samples_table(prompts: np.ndarray, before: HeldOut, after: HeldOut, rows: int) -> pd.DataFrame:
    """The first continuation of the first `rows` prompts, before and after, with their gold scores."""
    shown = range(min(rows, len(prompts)))
    b, a = ([i * h.samples_per_prompt for i in shown] for h in (before, after))
    table = pd.DataFrame(
        {
            "prompt": [decode(prompts[i].tolist()) for i in shown],
            "before (reference)": [before.texts[i] for i in b],
            "gold before": [before.gold[i] for i in b],
            "after (policy)": [after.texts[i] for i in a],
            "gold after": [after.gold[i] for i in a],
        }
    )
    if before.heldout_gold is not None and after.heldout_gold is not None:
        table["held-out gold before"] = [before.heldout_gold[i] for i in b]
        table["held-out gold after"] = [after.heldout_gold[i] for i in a]
    return table


def policy_samples_markdown(table: pd.DataFrame, oracle: Oracle, seed: int) -> str:
    """The sample table as Markdown; newlines shown as ⏎ so each sample stays on its row."""
    shown = table.map(lambda v: v.replace("\n", "⏎").replace("|", "\\|") if isinstance(v, str) else v)
    return (
        f"# RLHF samples: held-out prompts before and after (oracle `{oracle.name}`, same seed {seed})\n\n"
        + shown.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )


def proxy_vs_gold_figure(history: pd.DataFrame, oracle_name: str):
    """The reward-model (proxy) score and the oracle (gold) score over PPO steps, with the KL beneath.

    Reward hacking shows as the proxy climbing while the gold score stalls or falls.
    """
    plt = figures.pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    window = max(1, len(history) // 10)
    smooth = lambda column: history[column].rolling(window, min_periods=1).mean()  # noqa: E731
    top.plot(history["step"], smooth("reward_model_score"), color="tab:orange", label="reward model (proxy)")
    top.set_ylabel("reward model score (normalised)", color="tab:orange")
    gold = top.twinx()
    gold.plot(history["step"], smooth("gold_score"), color="tab:green", label=f"oracle '{oracle_name}' (gold)")
    gold.set_ylabel(f"oracle '{oracle_name}' score", color="tab:green")
    top.set_title(f"proxy vs gold during PPO (moving average over {window} steps)")
    bottom.plot(history["step"], history["kl"], color="tab:red", label="KL to reference")
    bottom.set(xlabel="PPO step", ylabel="KL (nats / sequence)")
    fig.tight_layout()
    return fig
