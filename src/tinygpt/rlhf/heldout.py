"""Evaluating RLHF on held-out prompts, before (the reference) and after (the policy), with the same seed:
oracle ("gold") score, reward-model ("proxy") score, KL to the reference, a table of samples, and the
figures of PPO's curves (tinygpt.pipeline.outputs.rlhf writes them)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tinygpt.core import figures
from tinygpt.core.device import autocast
from tinygpt.data.tokenizer import decode
from tinygpt.eval.likelihood import split_nll
from tinygpt.model.gpt import GPT
from tinygpt.rlhf.config import RlhfParams
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.reward_model import RewardModel
from tinygpt.rlhf.rollout import rollout_logprobs, sample

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
    rlhf_params: RlhfParams
    max_new_tokens: int
    oracle: Oracle
    precision: str


def evaluate(model: GPT, ref: GPT, task: EvalTask) -> tuple[HeldOut, dict[str, float]]:
    """Held-out continuations and their scores, plus the model's perplexity on the whole val split."""
    rlhf_params = task.rlhf_params
    result = held_out(
        model, ref, task.reward_model, task.prompts, rlhf_params.eval_samples_per_prompt, task.max_new_tokens,
        rlhf_params.temperature, rlhf_params.seed, task.oracle, task.precision, rlhf_params.batch_size,
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
