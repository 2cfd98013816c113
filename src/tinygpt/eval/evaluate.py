"""Evaluate any GPT: loss, perplexity and bits per byte on val (and a train sample), calibration of the
top-1 prediction with a fitted temperature, next-token probabilities and samples for a few prompts.

`evaluate_model` takes a model and token arrays, never paths, so the compare stage can run it on a
converted Hugging Face GPT-2 exactly as the evaluate stage runs it on ours. It returns numbers, tables and
(`reliability_figure`) a figure; tinygpt.pipeline.outputs.evaluate writes them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tinygpt.core import figures
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.core.errors import ParamsError
from tinygpt.data import tokenizer
from tinygpt.data.tokens import token_byte_lengths
from tinygpt.eval import calibration, inspection
from tinygpt.eval.config import EvalParams
from tinygpt.eval.likelihood import (NllResult, even_segments, lm_head_logits,
                                     split_nll)
from tinygpt.model.gpt import GPT


@dataclass
class EvaluationResult:
    metrics: dict  # nested: val.*, train.*, calibration.*, windows.* (see README, Stage evaluate)
    bins: pd.DataFrame  # reliability bins of the val split at temperature 1
    inspection: list[dict]  # per prompt: the top-k next tokens and their probabilities
    samples: list[dict]  # per prompt: a sampled continuation
    decoding: dict  # the sampling settings the samples were drawn with
    val: NllResult
    train: NllResult | None


def window_shape(model: GPT, eval_params: EvalParams) -> tuple[int, int]:
    """(context, stride) for this model; eval.context 0 means the model's whole block_size."""
    block = model.config.block_size
    context = eval_params.context or block
    if context > block:
        raise ParamsError(f"params.yaml: eval.context = {eval_params.context} exceeds the model's block_size {block}; "
                          f"set it to at most {block} (0 uses the block size)")
    if eval_params.stride > context:
        raise ParamsError(f"params.yaml: eval.stride = {eval_params.stride} exceeds the evaluation context {context}; "
                          f"allowed: 1..{context}")
    return context, eval_params.stride


@functools.lru_cache(maxsize=1)
def _byte_lengths() -> np.ndarray:
    return token_byte_lengths(tokenizer.gpt2_encoding())


def text_bytes(tokens: np.ndarray) -> int:
    """UTF-8 bytes of the text the GPT-2 ids decode to."""
    return int(_byte_lengths()[np.asarray(tokens, dtype=np.int64)].sum())


def temperature_metrics(val: NllResult, head, eval_params: EvalParams) -> tuple[dict, float]:
    """Fit T on the first half of val's scored positions; NLL/ECE/Brier before and after on the second.
    Returns (the before/after numbers, the fitted temperature)."""
    n = val.n_tokens
    if n < 2:
        raise ValueError("temperature scaling needs at least 2 scored val positions")
    half = n // 2
    fit = calibration.fit_temperature(head, val.hidden[:half], val.targets[:half])
    pos = val.positions
    before = calibration.calibrate(pos.confidence[half:], pos.correct[half:], eval_params.calibration_bins)
    scaled = calibration.scaled_stats(head, val.hidden[half:], val.targets[half:], fit.temperature)
    after = calibration.calibrate(scaled.confidence, scaled.correct, eval_params.calibration_bins)
    return {
        "fit_tokens": half,
        "test_tokens": n - half,
        "iterations": fit.iterations,
        "converged": fit.converged,
        "fit_nll": fit.nll,
        "nll_before": float(pos.nll[half:].mean(dtype=np.float64)),
        "nll_after": float(scaled.nll.mean(dtype=np.float64)),
        "ece_before": before.ece,
        "ece_after": after.ece,
        "brier_before": before.brier,
        "brier_after": after.brier,
        "accuracy_before": before.accuracy,
        "accuracy_after": after.accuracy,
    }, fit.temperature


def evaluate_model(
    model: GPT,
    eval_params: EvalParams,
    val_tokens: np.ndarray,
    val_bytes: int,
    train_tokens: np.ndarray | None = None,
    train_bytes: int | None = None,
    compute: ComputeParams = ComputeParams(),
    progress: bool = False,
) -> EvaluationResult:
    """Every number of the evaluate stage for `model` (moved to compute.device, run at compute.precision).

    `val_bytes`/`train_bytes` are the UTF-8 sizes of the whole splits; when eval.train_tokens samples
    the train split, the sample's bytes are counted from its GPT-2 tokens instead.
    """
    device = resolve_device(compute.device)
    precision = resolve_precision(compute.precision, device)
    model.to(device)
    context, stride = window_shape(model, eval_params)
    score = functools.partial(split_nll, model, context=context, stride=stride, batch_size=eval_params.batch_size,
                              device=device, precision=precision)

    val = score(val_tokens, progress="val" if progress else False, keep_hidden=True)
    metrics: dict = {"val": val.metrics(val_bytes)}
    train = None
    if train_tokens is not None:
        segments = even_segments(len(train_tokens), eval_params.train_tokens, eval_params.train_segments)
        train = score(train_tokens, progress="train" if progress else False, segments=segments)
        whole = segments == [(0, len(train_tokens))]
        n_bytes = train_bytes if whole and train_bytes is not None else sum(
            text_bytes(train_tokens[a:b]) for a, b in segments)
        metrics["train"] = train.metrics(n_bytes)

    head = lm_head_logits(model, device, precision)
    cal = calibration.calibrate(val.positions.confidence, val.positions.correct, eval_params.calibration_bins)
    scaling, temperature = temperature_metrics(val, head, eval_params)
    metrics["calibration"] = {**cal.summary(), "bins": eval_params.calibration_bins, "temperature": temperature,
                              "temperature_fit": scaling}
    metrics["windows"] = {"context": context, "stride": stride}

    decoding = {"max_new_tokens": eval_params.sample_max_new_tokens, "temperature": eval_params.sample_temperature,
                "top_k": eval_params.sample_top_k, "top_p": eval_params.sample_top_p, "seed": eval_params.sample_seed}
    looked = [inspection.next_tokens(model, q, eval_params.inspect_top_k, device, precision)
              for q in eval_params.prompts]
    # Seed + prompt index: one shared seed made every prompt's sample draw the same random numbers,
    # and the continuations came out near-identical.
    samples = [inspection.sample_completion(model, q, eval_params.sample_max_new_tokens,
                                            eval_params.sample_temperature, eval_params.sample_top_k,
                                            eval_params.sample_top_p, eval_params.sample_seed + i, device, precision)
               for i, q in enumerate(eval_params.prompts)]
    val.hidden = None  # n_embd floats per val token; nobody needs them after the fit
    return EvaluationResult(metrics, cal.bins, looked, samples, decoding, val, train)


# ---------------------------------------------------------------- figure


def reliability_figure(bins: pd.DataFrame, ece: float, title: str = ""):
    """Accuracy per confidence bin against the diagonal, with the confidence histogram beneath."""
    plt = figures.pyplot()
    width = float(bins["upper"].iloc[0] - bins["lower"].iloc[0])
    centres = (bins["lower"] + bins["upper"]) / 2
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    filled = bins["count"] > 0
    top.bar(centres[filled], bins.loc[filled, "accuracy"], width=width, edgecolor="black",
            color="tab:blue", label="accuracy")
    top.bar(centres[filled], -bins.loc[filled, "gap"], bottom=bins.loc[filled, "accuracy"], width=width,
            color="tab:red", alpha=0.35, hatch="//", edgecolor="tab:red", label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
            title=(f"{title}: " if title else "") + f"reliability (ECE {ece:.4f})")
    top.legend(loc="upper left")
    bottom.bar(centres, bins["count"], width=width, edgecolor="black", color="tab:gray")
    bottom.set(xlabel="top-1 confidence", ylabel="tokens", yscale="log" if bins["count"].max() > 0 else "linear")
    fig.tight_layout()
    return fig


def summary_line(metrics: dict) -> str:
    val, cal = metrics["val"], metrics["calibration"]
    return (f"val loss {val['loss']:.4f}, perplexity {val['perplexity']:.2f}, {val['bits_per_byte']:.4f} bits/byte; "
            f"ECE {cal['ece']:.4f}, T {cal['temperature']:.3f}")
