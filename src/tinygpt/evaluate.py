"""Evaluate any GPT: loss, perplexity and bits per byte on val (and a train sample), calibration of the
top-1 prediction with a fitted temperature, next-token probabilities and samples for a few prompts.

`evaluate_model` takes a model and token arrays, never paths, so the compare stage can run it on a
converted Hugging Face GPT-2 exactly as the evaluate stage runs it on ours.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tinygpt import calibration, inspection, io, paths, tokenizer
from tinygpt.data import token_byte_lengths
from tinygpt.device import resolve_device, resolve_precision
from tinygpt.likelihood import NllResult, even_segments, lm_head_logits, split_nll
from tinygpt.model import GPT
from tinygpt.params import EvalParams, ParamsError


@dataclass
class EvaluationResult:
    metrics: dict  # nested: val.*, train.*, calibration.*, windows.* (see README, Stage evaluate)
    bins: pd.DataFrame  # reliability bins of the val split at temperature 1
    inspection: list[dict]  # per prompt: the top-k next tokens and their probabilities
    samples: list[dict]  # per prompt: a sampled continuation
    decoding: dict  # the sampling settings the samples were drawn with
    val: NllResult
    train: NllResult | None


def window_shape(model: GPT, p: EvalParams) -> tuple[int, int]:
    """(context, stride) for this model; eval.context 0 means the model's whole block_size."""
    block = model.config.block_size
    context = p.context or block
    if context > block:
        raise ParamsError(f"params.yaml: eval.context = {p.context} exceeds the model's block_size {block}; "
                          f"set it to at most {block} (0 uses the block size)")
    if p.stride > context:
        raise ParamsError(f"params.yaml: eval.stride = {p.stride} exceeds the evaluation context {context}; "
                          f"allowed: 1..{context}")
    return context, p.stride


@functools.lru_cache(maxsize=1)
def _byte_lengths() -> np.ndarray:
    return token_byte_lengths(tokenizer.gpt2_encoding())


def text_bytes(tokens: np.ndarray) -> int:
    """UTF-8 bytes of the text the GPT-2 ids decode to."""
    return int(_byte_lengths()[np.asarray(tokens, dtype=np.int64)].sum())


def likelihood_metrics(result: NllResult, n_bytes: int) -> dict:
    return {
        "loss": result.mean_nll,
        "perplexity": result.perplexity,
        "bits_per_byte": result.bits_per_byte(n_bytes),
        "accuracy": result.accuracy,
        "tokens": result.n_tokens,
        "bytes": int(n_bytes),
    }


def temperature_metrics(val: NllResult, head, p: EvalParams) -> tuple[dict, float]:
    """Fit T on the first half of val's scored positions; NLL/ECE/Brier before and after on the second.
    Returns (the before/after numbers, the fitted temperature)."""
    n = val.n_tokens
    if n < 2:
        raise ValueError("temperature scaling needs at least 2 scored val positions")
    half = n // 2
    fit = calibration.fit_temperature(head, val.hidden[:half], val.targets[:half],
                                      p.temperature_max_iter, p.temperature_tol)
    pos = val.positions
    before = calibration.calibrate(pos.confidence[half:], pos.correct[half:], p.calibration_bins)
    scaled = calibration.scaled_stats(head, val.hidden[half:], val.targets[half:], fit.temperature)
    after = calibration.calibrate(scaled.confidence, scaled.correct, p.calibration_bins)
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
    params: EvalParams,
    val_tokens: np.ndarray,
    val_bytes: int,
    train_tokens: np.ndarray | None = None,
    train_bytes: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Every number of the evaluate stage for `model` (moved to `device`, default eval.device).

    `val_bytes`/`train_bytes` are the UTF-8 sizes of the whole splits; when eval.train_tokens samples
    the train split, the sample's bytes are counted from its GPT-2 tokens instead.
    """
    p = params
    device = resolve_device(p.device) if device is None else torch.device(device)
    precision = resolve_precision(p.precision, device)
    model.to(device)
    context, stride = window_shape(model, p)
    score = functools.partial(split_nll, model, context=context, stride=stride, batch_size=p.batch_size,
                              device=device, precision=precision)

    val = score(val_tokens, progress="val" if progress else False, keep_hidden=True)
    metrics: dict = {"val": likelihood_metrics(val, val_bytes)}
    train = None
    if train_tokens is not None:
        segments = even_segments(len(train_tokens), p.train_tokens, p.train_segments)
        train = score(train_tokens, progress="train" if progress else False, segments=segments)
        whole = segments == [(0, len(train_tokens))]
        n_bytes = train_bytes if whole and train_bytes is not None else sum(
            text_bytes(train_tokens[a:b]) for a, b in segments)
        metrics["train"] = likelihood_metrics(train, n_bytes)

    head = lm_head_logits(model, device, precision)
    cal = calibration.calibrate(val.positions.confidence, val.positions.correct, p.calibration_bins)
    scaling, temperature = temperature_metrics(val, head, p)
    metrics["calibration"] = {**cal.summary(), "bins": p.calibration_bins, "temperature": temperature,
                              "temperature_fit": scaling}
    metrics["windows"] = {"context": context, "stride": stride}

    decoding = {"max_new_tokens": p.sample_max_new_tokens, "temperature": p.sample_temperature,
                "top_k": p.sample_top_k, "top_p": p.sample_top_p, "seed": p.sample_seed}
    looked = [inspection.next_tokens(model, q, p.inspect_top_k, device, precision) for q in p.prompts]
    # Seed + prompt index: one shared seed made every prompt's sample draw the same random numbers,
    # and the continuations came out near-identical.
    samples = [inspection.sample(model, q, p.sample_max_new_tokens, p.sample_temperature, p.sample_top_k,
                                 p.sample_top_p, p.sample_seed + i, device, precision)
               for i, q in enumerate(p.prompts)]
    val.hidden = None  # n_embd floats per val token; nobody needs them after the fit
    return EvaluationResult(metrics, cal.bins, looked, samples, decoding, val, train)


# ---------------------------------------------------------------- writing


def reliability_figure(bins: pd.DataFrame, ece: float, title: str = ""):
    """Accuracy per confidence bin against the diagonal, with the confidence histogram beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_evaluation(result: EvaluationResult, out_dir: Path, reports_dir: Path | None = None,
                     title: str = "") -> list[Path]:
    """Bins CSV and reliability PNG into `out_dir`; next tokens and samples (JSON + Markdown) into
    `reports_dir` (default `out_dir`). Returns the files written, for logging as artifacts."""
    out_dir = Path(out_dir)
    reports_dir = out_dir if reports_dir is None else Path(reports_dir)
    files = {
        "csv": out_dir / paths.RELIABILITY_CSV.name,
        "png": out_dir / paths.RELIABILITY_PNG.name,
        "tokens_json": reports_dir / paths.NEXT_TOKENS_JSON.name,
        "tokens_md": reports_dir / paths.NEXT_TOKENS_MD.name,
        "samples_json": reports_dir / paths.SAMPLES_JSON.name,
        "samples_md": reports_dir / paths.SAMPLES_MD.name,
    }
    io.write_text(files["csv"], result.bins.to_csv(index=False, float_format="%.6f"))
    write_figure(reliability_figure(result.bins, result.metrics["calibration"]["ece"], title), files["png"])
    io.write_json(files["tokens_json"], result.inspection)
    io.write_text(files["tokens_md"], inspection.next_tokens_markdown(result.inspection))
    io.write_json(files["samples_json"], {"decoding": result.decoding, "samples": result.samples})
    io.write_text(files["samples_md"], inspection.samples_markdown(result.samples, result.decoding))
    return list(files.values())


def summary_line(metrics: dict) -> str:
    val, cal = metrics["val"], metrics["calibration"]
    return (f"val loss {val['loss']:.4f}, perplexity {val['perplexity']:.2f}, {val['bits_per_byte']:.4f} bits/byte; "
            f"ECE {cal['ece']:.4f}, T {cal['temperature']:.3f}")
