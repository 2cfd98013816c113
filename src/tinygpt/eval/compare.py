"""Our trained GPT against Hugging Face's GPT-2, in one run:

(a) fidelity: our weights exported to `transformers.GPT2LMHeadModel` and both run on the val split;
    the largest logit difference and both losses show the two implementations compute the same model;
(b) a pretrained GPT-2 (`compare.pretrained`) converted into our GPT and scored by `evaluate_model`,
    the evaluate stage's own code, on the same val tokens and windows as our model;
(c) speed: tokens/s of both implementations with the same weights, batch and threads (tinygpt.eval.speed).

A pretrained model that cannot be loaded is recorded as `unavailable` with the reason, and (a) and (c)
still run, unless `compare.require_pretrained` makes it an error.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

from tinygpt.core import figures
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.eval.config import CompareParams, EvalParams
from tinygpt.eval.evaluate import (EvaluationResult, evaluate_model,
                                   summary_line, window_shape)
from tinygpt.eval.speed import (SpeedResult, SpeedSettings, compare_speed,
                                format_speed)
from tinygpt.model.gpt import GPT
from tinygpt.model.hf import (ConversionError, PretrainedUnavailable,
                              export_hf_dir, gpt_from_hf, load_pretrained)

OURS = "ours"  # metric prefixes (ours.val.loss, gpt2.val.loss) and per-model output folders
PRETRAINED = "gpt2"
AVAILABLE, UNAVAILABLE = "available", "unavailable"
# Windows per forward pass of the fidelity check: its fp32 logits (8 x 128 x 50257) take 200 MB per model.
FIDELITY_BATCH_SIZE = 8


# ---------------------------------------------------------------- (a) fidelity


def fidelity(ours: GPT, hf_model: GPT2LMHeadModel, tokens: np.ndarray, batch_size: int,
             device: torch.device) -> dict:
    """Both implementations in fp32 on the same non-overlapping windows of `tokens`: the largest and
    mean absolute logit difference, each one's loss, and how often their top-1 tokens agree."""
    context = min(ours.config.block_size, len(tokens) - 1)
    n_windows = (len(tokens) - 1) // context
    ids = torch.from_numpy(np.asarray(tokens[: n_windows * context + 1], dtype=np.int64))
    x_all, y_all = ids[:-1].view(n_windows, context), ids[1:].view(n_windows, context)
    ours, hf_model = ours.to(device).eval(), hf_model.to(device).eval()
    max_diff, sum_diff, nll_ours, nll_hf, agree = 0.0, 0.0, 0.0, 0.0, 0
    with torch.inference_mode():
        for begin in range(0, n_windows, batch_size):
            x, y = x_all[begin : begin + batch_size].to(device), y_all[begin : begin + batch_size].to(device)
            a, _ = ours(x)
            b = hf_model(input_ids=x, use_cache=False).logits
            diff = (a.float() - b.float()).abs()
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.double().sum())
            nll_ours += float(F.cross_entropy(a.flatten(0, 1).float(), y.flatten(), reduction="sum"))
            nll_hf += float(F.cross_entropy(b.flatten(0, 1).float(), y.flatten(), reduction="sum"))
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
    n = n_windows * context
    return {
        "max_abs_logit_diff": max_diff,
        "mean_abs_logit_diff": sum_diff / (n * ours.config.vocab_size),
        "ours_loss": nll_ours / n,
        "hf_loss": nll_hf / n,
        "abs_loss_diff": abs(nll_ours - nll_hf) / n,
        "top1_agreement": agree / n,
        "tokens": n,
        "context": context,
    }


# ---------------------------------------------------------------- (b) the pretrained model


@dataclass
class Pretrained:
    status: str  # available | unavailable
    name: str  # compare.pretrained as given
    reason: str = ""  # why it is unavailable
    hf_model: GPT2LMHeadModel | None = None

    def summary(self) -> dict:
        return {"status": self.status, "name": self.name, "reason": self.reason}


def find_pretrained(compare_params: CompareParams) -> Pretrained:
    """Load compare.pretrained, or record why it cannot be (an error when compare.require_pretrained)."""
    try:
        hf_model = load_pretrained(compare_params.pretrained, compare_params.allow_download)
        return Pretrained(AVAILABLE, compare_params.pretrained, hf_model=hf_model)
    except PretrainedUnavailable as err:
        if compare_params.require_pretrained:
            raise PretrainedUnavailable(
                err.name, err.reason + "; compare.require_pretrained is true, set it to false to go on without"
            ) from err
        return Pretrained(UNAVAILABLE, compare_params.pretrained, reason=err.reason)


def pretrained_eval_params(eval_params: EvalParams, ours_context: int, pretrained: GPT,
                           compare_params: CompareParams) -> EvalParams:
    """The evaluate stage's params with the window our model was scored with, so both models predict
    every val token from the same history (compare.pretrained_context overrides it)."""
    context = compare_params.pretrained_context or ours_context
    return dataclasses.replace(eval_params, context=min(context, pretrained.config.block_size))


def check_vocab(model: GPT, tokens: np.ndarray, name: str) -> None:
    largest = int(np.max(tokens))
    if largest >= model.config.vocab_size:
        raise ConversionError(
            f"{name} has a vocabulary of {model.config.vocab_size}, but the val split holds id {largest}; "
            "compare.pretrained must be a GPT-2 with the GPT-2 tokenizer's 50257 ids"
        )


# ---------------------------------------------------------------- the whole comparison


@dataclass
class ModelReport:
    label: str  # ours | gpt2
    name: str  # shown in the table
    evaluation: EvaluationResult
    parameters: int
    speed: SpeedResult | None

    def metrics(self) -> dict:
        out = {"parameters": self.parameters, **self.evaluation.metrics}
        if self.speed is not None:
            out["speed"] = self.speed.metrics()
        return out


@dataclass
class CompareResult:
    fidelity: dict
    pretrained: Pretrained
    reports: list[ModelReport]
    table: pd.DataFrame

    def metrics(self) -> dict:
        out = {
            "pretrained_status": self.pretrained.status,
            "pretrained": self.pretrained.name,
            "pretrained_reason": self.pretrained.reason,
            "fidelity": self.fidelity,
        }
        for report in self.reports:
            out[report.label] = report.metrics()
        return out


def speed_settings(compare_params: CompareParams, ours: GPT) -> SpeedSettings:
    """compare.speed_*, with SpeedSettings' warmup, repeats and threads; sequences default to our block
    size for every model, so GPT-2's row is timed on the same batch shape as ours (not its 1024-token context)."""
    seq = compare_params.speed_seq_len or ours.config.block_size
    return SpeedSettings(compare_params.speed_batch_size, seq)


def run_compare(ours: GPT, compare_params: CompareParams, eval_params: EvalParams, val_tokens: np.ndarray,
                val_bytes: int, hf_dir: Path, progress: bool = False,
                compute: ComputeParams = ComputeParams()) -> CompareResult:
    """Export `ours` to `hf_dir`, then (a) fidelity, (b) both models through evaluate_model, (c) speed; all
    on compute.device, (b) and (c) at compute.precision ((a) in fp32)."""
    device = resolve_device(compute.device)
    precision = resolve_precision(compute.precision, device)
    pretrained = find_pretrained(compare_params)  # first: with compare.require_pretrained a miss fails before any work
    export_hf_dir(ours, hf_dir)
    # Read the export back from disk, so the fidelity check covers the files users will load.
    hf_ours = load_pretrained(str(hf_dir), allow_download=False)  # safetensors only, fp32, eval
    fidelity_tokens = val_tokens[: compare_params.fidelity_tokens] if compare_params.fidelity_tokens else val_tokens
    fid = fidelity(ours, hf_ours, fidelity_tokens, FIDELITY_BATCH_SIZE, device)

    reports = [ModelReport(
        OURS, "tinygpt (trained here)",
        evaluate_model(ours, eval_params, val_tokens, val_bytes, compute=compute, progress=progress),
        ours.param_counts().total,
        compare_speed(ours, hf_ours, speed_settings(compare_params, ours), device, precision),
    )]
    if pretrained.hf_model is not None:
        gpt2 = gpt_from_hf(pretrained.hf_model)
        check_vocab(gpt2, val_tokens, compare_params.pretrained)
        params_gpt2 = pretrained_eval_params(eval_params, window_shape(ours, eval_params)[0], gpt2, compare_params)
        speed = None
        if compare_params.speed_pretrained:
            speed = compare_speed(gpt2, pretrained.hf_model, speed_settings(compare_params, ours), device, precision)
        reports.append(ModelReport(
            PRETRAINED, f"{compare_params.pretrained} (pretrained)",
            evaluate_model(gpt2, params_gpt2, val_tokens, val_bytes, compute=compute, progress=progress),
            gpt2.param_counts().total,
            speed,
        ))
    return CompareResult(fid, pretrained, reports, comparison_table(reports))


# ---------------------------------------------------------------- table and figure


def comparison_table(reports: list[ModelReport]) -> pd.DataFrame:
    """One row per model: size, val likelihood, calibration and tokens/s of both implementations."""
    rows = []
    for r in reports:
        val, cal = r.evaluation.metrics["val"], r.evaluation.metrics["calibration"]
        row = {
            "model": r.name,
            "parameters": r.parameters,
            "val loss": val["loss"],
            "perplexity": val["perplexity"],
            "bits per byte": val["bits_per_byte"],
            "ECE": cal["ece"],
            "context": r.evaluation.metrics["windows"]["context"],
        }
        for mode, title in (("forward", "fwd"), ("train_step", "fwd+bwd")):
            for impl in ("tinygpt", "transformers"):
                timing = r.speed.timings[impl][mode] if r.speed else None
                row[f"{title} tok/s ({impl})"] = timing.tokens_per_s if timing else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text for reading: thousands separators, 4 decimals, a dash where nothing was measured."""
    def fmt(column: str, value) -> str:
        if isinstance(value, float) and math.isnan(value):
            return "—"
        if column in ("parameters", "context") or "tok/s" in column:
            return f"{value:,.0f}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return pd.DataFrame({c: [fmt(c, v) for v in table[c]] for c in table.columns})


def table_markdown(result: CompareResult) -> str:
    text = display_table(result.table).to_markdown(index=False, disable_numparse=True)
    notes = [
        f"fidelity (a): our weights in transformers' GPT-2 on {result.fidelity['tokens']:,} val tokens: "
        f"max |logit diff| {result.fidelity['max_abs_logit_diff']:.3g}, loss {result.fidelity['ours_loss']:.6f} "
        f"(tinygpt) vs {result.fidelity['hf_loss']:.6f} (transformers)",
    ]
    if result.pretrained.status == UNAVAILABLE:
        notes.append(f"pretrained `{result.pretrained.name}`: unavailable ({result.pretrained.reason}); "
                     "see the README, Stage compare, to provide it")
    return text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def reliability_overlay(reports: list[ModelReport]):
    """Every model's reliability curve (accuracy against mean confidence per bin) on one diagonal."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for r in reports:
        bins = r.evaluation.bins[r.evaluation.bins["count"] > 0]
        ece = r.evaluation.metrics["calibration"]["ece"]
        ax.plot(bins["confidence"], bins["accuracy"], marker="o", label=f"{r.name} (ECE {ece:.4f})")
    ax.set(xlabel="top-1 confidence (bin mean)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title="reliability on the val split")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def summary_lines(result: CompareResult) -> list[str]:
    f = result.fidelity
    lines = [f"fidelity: max |logit diff| {f['max_abs_logit_diff']:.3g} over {f['tokens']:,} val tokens; "
             f"loss {f['ours_loss']:.6f} (tinygpt) vs {f['hf_loss']:.6f} (transformers), "
             f"top-1 agreement {f['top1_agreement']:.4%}"]
    for r in result.reports:
        lines.append(f"{r.label}: {summary_line(r.evaluation.metrics)}")
        if r.speed is not None:
            lines.append(format_speed(r.speed, label=r.label))
    if result.pretrained.status == UNAVAILABLE:
        lines.append(f"{PRETRAINED}: unavailable ({result.pretrained.reason})")
    return lines
