"""What the dpo stage writes besides the policy: its step curves, the frontier's points and samples."""
from __future__ import annotations

from pathlib import Path

from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves
from tinygpt.pipeline.outputs.rlhf import write_frontier_and_samples
from tinygpt.rlhf.frontier import FrontierTracker
from tinygpt.rlhf.heldout import EvalTask

CURVES = ["loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "lr", "grad_norm"]


def write_outputs(history: list[dict], tracker: FrontierTracker, task: EvalTask) -> list[Path]:
    write_curves(history, paths.DPO_STEPS_CSV, paths.DPO_STEPS_PNG, CURVES, "DPO training")
    write_frontier_and_samples(tracker, task, paths.DPO_FRONTIER_CSV, paths.DPO_SAMPLES_MD, paths.DPO_SAMPLES_CSV)
    return [paths.DPO_PLOTS, paths.DPO_REPORTS]
