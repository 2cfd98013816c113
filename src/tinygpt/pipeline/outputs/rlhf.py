"""What the rlhf stage writes besides the policy: PPO's step curves, the proxy-vs-gold figure, the
frontier's evaluated points, the reported point's samples, and report-set samples before and after."""
from __future__ import annotations

from pathlib import Path

from tinygpt.core import io
from tinygpt.core.figures import write_figure
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves
from tinygpt.pipeline.outputs.samples import write_samples
from tinygpt.rlhf.frontier import FrontierTracker
from tinygpt.rlhf.heldout import (CURVES, EvalTask, proxy_vs_gold_figure,
                                  policy_samples_markdown, samples_table)

# Rows of reports/{rlhf,dpo}/samples.md: enough to see what changed, few enough to read on one screen.
TABLE_SAMPLES = 8


def write_outputs(history: list[dict], tracker: FrontierTracker, task: EvalTask) -> list[Path]:
    """The step curves (CSV + PNG), the proxy-vs-gold figure, frontier.csv and the sample table; returns
    the folders."""
    curves = [c for c in CURVES if c in history[0]]  # ptx_loss only with PPO-ptx
    table = write_curves(history, paths.RLHF_STEPS_CSV, paths.RLHF_STEPS_PNG, curves, "PPO training")
    write_figure(proxy_vs_gold_figure(table, task.oracle.name), paths.RLHF_PROXY_GOLD_PNG)
    write_frontier_and_samples(tracker, task, paths.RLHF_FRONTIER_CSV, paths.RLHF_SAMPLES_MD, paths.RLHF_SAMPLES_CSV)
    return [paths.RLHF_PLOTS, paths.RLHF_REPORTS]


def write_frontier_and_samples(tracker: FrontierTracker, task: EvalTask, frontier_csv: Path, samples_md: Path,
                               samples_csv: Path) -> None:
    """Every evaluated point (both sets) as CSV, every held-out sample of the reported point (the frontier
    compares it with best-of-n prompt by prompt), and report-set samples of the reference and the reported
    point side by side."""
    io.write_text(frontier_csv, tracker.table().to_csv(index=False, float_format="%.6g"))
    write_samples(samples_csv, tracker.selected.sets)
    settings = task.heldout_params
    samples = samples_table(task.prompts["report"].cpu().numpy(), tracker.reference.sets["report"],
                            tracker.selected.sets["report"], TABLE_SAMPLES)
    io.write_text(samples_md, policy_samples_markdown(samples, task.oracle, settings.seed))
