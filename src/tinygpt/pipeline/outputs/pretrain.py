"""What the pretrain stage writes besides the weights: the loss on the whole val split, the curves
(CSV for `dvc plots`, PNG figures) and samples from fixed prompts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tinygpt.core import io
from tinygpt.eval import inspection
from tinygpt.eval.evaluate import likelihood_metrics
from tinygpt.eval.likelihood import split_nll
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import TrainResult

STEP_COLUMNS = ["loss", "lr", "grad_norm", "tokens_per_s"]
EVAL_COLUMNS = ["train_loss", "val_loss", "train_perplexity", "val_perplexity"]
LOG_COLUMNS = ["train_perplexity", "val_perplexity"]  # exp(loss): from ~50,000 at step 0 to ~100


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
    write_curves(result.evals, eval_csv, eval_png, EVAL_COLUMNS, "pretrain: fixed evaluation batches",
                 log_y=LOG_COLUMNS)
    return [steps_csv, steps_png, eval_csv, eval_png]


def decoding(train_params: TrainParams) -> dict:
    return {"max_new_tokens": train_params.sample_tokens, "temperature": train_params.sample_temperature,
            "top_k": train_params.sample_top_k, "seed": train_params.seed}


def samples(result: TrainResult, train_params: TrainParams) -> list[dict]:
    """One continuation per train.sample_prompts from the final weights; prompt i is sampled with seed + i
    (as the evaluate stage does), so the prompts' draws are independent."""
    device = next(result.model.parameters()).device
    precision = result.metrics["precision"]
    return [
        inspection.sample(result.model, prompt, train_params.sample_tokens, train_params.sample_temperature,
                          train_params.sample_top_k, None, train_params.seed + i, torch.device(device), precision)
        for i, prompt in enumerate(train_params.sample_prompts)
    ]


def write_samples(items: list[dict], train_params: TrainParams,
                  reports_dir: Path = paths.PRETRAIN_REPORTS) -> list[Path]:
    reports_dir = Path(reports_dir)
    json_path = reports_dir / paths.PRETRAIN_SAMPLES_JSON.name
    md_path = reports_dir / paths.PRETRAIN_SAMPLES_MD.name
    io.write_json(json_path, {"decoding": decoding(train_params), "samples": items})
    io.write_text(md_path, inspection.samples_markdown(items, decoding(train_params),
                                                       title="Samples after pretraining"))
    return [json_path, md_path]
