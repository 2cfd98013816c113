"""What the rlhf stage writes besides the policy: PPO's step curves, the proxy-vs-gold figure, and the
held-out samples before and after."""
from __future__ import annotations

from pathlib import Path

from tinygpt.core import io
from tinygpt.core.figures import write_figure
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves
from tinygpt.rlhf.heldout import (CURVES, EvalTask, HeldOut,
                                  proxy_vs_gold_figure, samples_markdown,
                                  samples_table)


def write_outputs(history: list[dict], before: HeldOut, after: HeldOut, task: EvalTask) -> list[Path]:
    """The step curves (CSV + PNG), the proxy-vs-gold figure and the sample table; returns the folders."""
    curves = [c for c in CURVES if c in history[0]]  # ptx_loss only with PPO-ptx
    table = write_curves(history, paths.RLHF_STEPS_CSV, paths.RLHF_STEPS_PNG, curves, "PPO training")
    write_figure(proxy_vs_gold_figure(table, task.oracle.name), paths.RLHF_PROXY_GOLD_PNG)
    rlhf_params = task.rlhf_params
    samples = samples_table(task.prompts.cpu().numpy(), before, after, rlhf_params.eval_samples_per_prompt,
                            rlhf_params.table_samples)
    io.write_text(paths.RLHF_SAMPLES_MD, samples_markdown(samples, task.oracle, rlhf_params.seed))
    return [paths.RLHF_PLOTS, paths.RLHF_REPORTS]
