"""What the reward stage writes besides the model: its training curves."""
from __future__ import annotations

from pathlib import Path

from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves

CURVES = ["loss", "accuracy", "grad_norm", "lr"]


def write_plots(history: list[dict]) -> list[Path]:
    """steps.csv and steps.png: the Bradley-Terry loss, pair accuracy, gradient norm and lr of every step."""
    write_curves(history, paths.REWARD_STEPS_CSV, paths.REWARD_STEPS_PNG, CURVES,
                 "reward model: Bradley-Terry training")
    return [paths.REWARD_STEPS_CSV, paths.REWARD_STEPS_PNG]
