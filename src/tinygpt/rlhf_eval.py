"""Evaluating RLHF on held-out prompts, before (the reference) and after (the policy), with the same seed:
oracle ("gold") score, reward-model ("proxy") score, KL to the reference, and a table of samples."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tinygpt import io, paths
from tinygpt.device import autocast
from tinygpt.evaluate import write_figure
from tinygpt.likelihood import split_nll
from tinygpt.model import GPT
from tinygpt.oracles import Oracle
from tinygpt.params import RlhfParams
from tinygpt.reward_model import RewardModel
from tinygpt.rlhf_plots import proxy_vs_gold_figure, write_curves
from tinygpt.rollout import rollout_logprobs, sample
from tinygpt.tokenizer import decode

CURVES = ["reward_model_score", "gold_score", "kl", "beta", "entropy", "policy_loss", "value_loss",
          "clip_fraction", "approx_kl", "explained_variance", "ptx_loss", "response_tokens"]


@dataclass
class HeldOut:
    """One model's continuations of the held-out prompts (prompt-major) and their scores."""

    texts: list[str]
    gold: np.ndarray  # oracle score per continuation
    reward: np.ndarray  # normalised reward-model score
    kl: np.ndarray  # sum over the continuation of log pi - log pi_ref, nats
    tokens: np.ndarray  # response length, up to and including an end-of-text

    def metrics(self) -> dict[str, float]:
        return {
            "oracle_mean": float(self.gold.mean()),
            "oracle_sem": float(self.gold.std(ddof=1) / np.sqrt(len(self.gold))),
            "reward_model_mean": float(self.reward.mean()),
            "kl_mean": float(self.kl.mean()),
            "response_tokens_mean": float(self.tokens.mean()),
        }


@torch.no_grad()
def held_out(
    model: GPT, ref: GPT, reward_model: RewardModel, prompts: torch.Tensor, samples: int, max_new_tokens: int,
    temperature: float, seed: int, oracle: Oracle, precision: str, batch_size: int,
) -> HeldOut:
    """Sample `samples` continuations per prompt from `model` (seeded) and score them."""
    generator = torch.Generator(prompts.device).manual_seed(seed)
    texts, ids, rewards, kls = [], [], [], []
    for chunk in prompts.repeat_interleave(samples, dim=0).split(batch_size):
        rollout = sample(model, chunk, max_new_tokens, temperature, generator, precision)
        log_ratio = rollout_logprobs(model, rollout, temperature, precision) - rollout_logprobs(
            ref, rollout, temperature, precision
        )
        with autocast(prompts.device, precision):
            rewards.append(reward_model(rollout.sequences, rollout.last_index).float().cpu())
        kls.append((log_ratio * rollout.mask).sum(dim=1).cpu())
        texts += rollout.texts()
        ids += rollout.response_ids()
    return HeldOut(
        texts, np.asarray(oracle.scores(texts, ids)), torch.cat(rewards).numpy(), torch.cat(kls).numpy(),
        np.asarray([len(row) for row in ids]),
    )


@dataclass
class EvalTask:
    """What the before/after evaluation holds fixed: prompts, seed, scorers and the val split."""

    reward_model: RewardModel
    prompts: torch.Tensor  # (n, prompt_len) held-out prompts
    val_tokens: np.ndarray
    p: RlhfParams
    max_new_tokens: int
    oracle: Oracle
    precision: str


def evaluate(model: GPT, ref: GPT, task: EvalTask) -> tuple[HeldOut, dict[str, float]]:
    """Held-out continuations and their scores, plus the model's perplexity on the whole val split."""
    p = task.p
    result = held_out(
        model, ref, task.reward_model, task.prompts, p.eval_samples_per_prompt, task.max_new_tokens,
        p.temperature, p.seed, task.oracle, task.precision, p.batch_size,
    )
    context = model.config.block_size  # non-overlapping windows: the same for the model before and after
    nll = split_nll(model, task.val_tokens, context, context, batch_size=16, device=task.prompts.device,
                    precision=task.precision)
    return result, {**result.metrics(), "val_loss": nll.mean_nll, "val_perplexity": nll.perplexity}


def change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What RLHF changed: score differences and the relative change in perplexity."""
    return {
        "oracle_mean": after["oracle_mean"] - before["oracle_mean"],
        "reward_model_mean": after["reward_model_mean"] - before["reward_model_mean"],
        "kl_mean": after["kl_mean"],
        "val_perplexity_relative": after["val_perplexity"] / before["val_perplexity"] - 1.0,
    }


def samples_table(prompts: np.ndarray, before: HeldOut, after: HeldOut, samples: int, rows: int) -> pd.DataFrame:
    """The first continuation of the first `rows` prompts, before and after, with their gold scores."""
    picked = [i * samples for i in range(min(rows, len(prompts)))]
    return pd.DataFrame(
        {
            "prompt": [decode(prompts[i // samples].tolist()) for i in picked],
            "before (reference)": [before.texts[i] for i in picked],
            "gold before": [before.gold[i] for i in picked],
            "after (policy)": [after.texts[i] for i in picked],
            "gold after": [after.gold[i] for i in picked],
        }
    )


def samples_markdown(table: pd.DataFrame, oracle: Oracle, seed: int) -> str:
    """The sample table as Markdown; newlines shown as ⏎ so each sample stays on its row."""
    shown = table.map(lambda v: v.replace("\n", "⏎").replace("|", "\\|") if isinstance(v, str) else v)
    return (
        f"# RLHF samples: held-out prompts before and after (oracle `{oracle.name}`, same seed {seed})\n\n"
        + shown.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )


def write_outputs(history: list[dict], before: HeldOut, after: HeldOut, task: EvalTask) -> list[Path]:
    """The step curves (CSV + PNG), the proxy-vs-gold figure and the sample table; returns the folders."""
    curves = [c for c in CURVES if c in history[0]]  # ptx_loss only with PPO-ptx
    table = write_curves(history, paths.RLHF_STEPS_CSV, paths.RLHF_STEPS_PNG, curves, "PPO training")
    write_figure(proxy_vs_gold_figure(table, task.oracle.name), paths.RLHF_PROXY_GOLD_PNG)
    prompts = task.prompts.cpu().numpy()
    samples = samples_table(prompts, before, after, task.p.eval_samples_per_prompt, task.p.table_samples)
    io.write_text(paths.RLHF_SAMPLES_MD, samples_markdown(samples, task.oracle, task.p.seed))
    return [paths.RLHF_PLOTS, paths.RLHF_REPORTS]
