"""What the pretrain stage writes besides the weights: the loss on the whole val split, the curves
(CSV for `dvc plots`, PNG figures) and samples from fixed prompts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tinygpt import inspection, io, paths
from tinygpt.evaluate import likelihood_metrics
from tinygpt.likelihood import split_nll
from tinygpt.params import TrainParams
from tinygpt.rlhf_plots import write_curves
from tinygpt.train import TrainResult

STEP_COLUMNS = ["loss", "lr", "grad_norm", "tokens_per_s"]
EVAL_COLUMNS = ["train_loss", "val_loss", "train_perplexity", "val_perplexity"]


def whole_split(model: torch.nn.Module, tokens: np.ndarray, n_bytes: int, device: torch.device, precision: str,
                batch_size: int = 32) -> dict:
    """Loss, perplexity and bits per byte over every token of a split, in non-overlapping windows of the
    model's context: the fixed evaluation batches cover ~10% of the val split and are only a trend; this
    is the number to compare runs by (the evaluate stage adds overlapping windows and calibration)."""
    context = model.config.block_size
    return likelihood_metrics(split_nll(model, tokens, context, context, batch_size, device, precision), n_bytes)


def write_plots(result: TrainResult, plots_dir: Path = paths.PRETRAIN_PLOTS) -> list[Path]:
    """steps.csv/png (every step) and eval.csv/png (every evaluation on the fixed batches)."""
    plots_dir = Path(plots_dir)
    steps_csv, steps_png = plots_dir / paths.PRETRAIN_STEPS_CSV.name, plots_dir / paths.PRETRAIN_STEPS_PNG.name
    eval_csv, eval_png = plots_dir / paths.PRETRAIN_EVAL_CSV.name, plots_dir / paths.PRETRAIN_EVAL_PNG.name
    write_curves(result.history, steps_csv, steps_png, STEP_COLUMNS, "pretrain: every step")
    write_curves(result.evals, eval_csv, eval_png, EVAL_COLUMNS, "pretrain: fixed evaluation batches")
    return [steps_csv, steps_png, eval_csv, eval_png]


def decoding(p: TrainParams) -> dict:
    return {"max_new_tokens": p.sample_tokens, "temperature": p.sample_temperature, "top_k": p.sample_top_k,
            "seed": p.seed}


def samples(result: TrainResult, p: TrainParams) -> list[dict]:
    """One seeded continuation per train.sample_prompts, from the final weights."""
    device = next(result.model.parameters()).device
    precision = result.metrics["precision"]
    return [
        inspection.sample(result.model, prompt, p.sample_tokens, p.sample_temperature, p.sample_top_k, None,
                          p.seed, torch.device(device), precision)
        for prompt in p.sample_prompts
    ]


def write_samples(items: list[dict], p: TrainParams, reports_dir: Path = paths.PRETRAIN_REPORTS) -> list[Path]:
    reports_dir = Path(reports_dir)
    json_path = reports_dir / paths.PRETRAIN_SAMPLES_JSON.name
    md_path = reports_dir / paths.PRETRAIN_SAMPLES_MD.name
    io.write_json(json_path, {"decoding": decoding(p), "samples": items})
    io.write_text(md_path, inspection.samples_markdown(items, decoding(p), title="Samples after pretraining"))
    return [json_path, md_path]
