"""What the pretrain stage writes besides the weights: the loss on the whole val split and the curves
(CSV for `dvc plots`, PNG figures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tinygpt.eval.likelihood import split_nll
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves
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
    return split_nll(model, tokens, context, context, batch_size, device, precision).metrics(n_bytes)


def write_plots(result: TrainResult, plots_dir: Path = paths.PRETRAIN_PLOTS) -> list[Path]:
    """steps.csv/png (every step) and eval.csv/png (every evaluation on the fixed batches)."""
    plots_dir = Path(plots_dir)
    steps_csv, steps_png = plots_dir / paths.PRETRAIN_STEPS_CSV.name, plots_dir / paths.PRETRAIN_STEPS_PNG.name
    eval_csv, eval_png = plots_dir / paths.PRETRAIN_EVAL_CSV.name, plots_dir / paths.PRETRAIN_EVAL_PNG.name
    write_curves(result.history, steps_csv, steps_png, STEP_COLUMNS, "pretrain: every step")
    write_curves(result.evals, eval_csv, eval_png, EVAL_COLUMNS, "pretrain: fixed evaluation batches",
                 log_y=LOG_COLUMNS)
    return [steps_csv, steps_png, eval_csv, eval_png]

