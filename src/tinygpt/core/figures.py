"""Figures: matplotlib on its Agg backend (no display needed), PNGs written atomically, and the panel
figure of per-step curves that pretraining, the reward model and PPO share.

Every figure-maker gets pyplot from `pyplot()`, so the backend is chosen in one place, before the first
figure; domain code returns figures, and the pipeline writes them with `write_figure`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Collection

import numpy as np
import pandas as pd

from tinygpt.core import io

DPI = 120  # every PNG of the pipeline (its bytes are compared run to run)


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(fig, path: Path) -> None:
    """`fig` as a PNG at `path` (atomically), then closed."""
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    pyplot().close(fig)


def curves_figure(history: pd.DataFrame, columns: list[str], title: str, x: str = "step",
                  log_y: Collection[str] = ()):
    """One small panel per column against `x`, the raw values and a moving average; the columns in
    `log_y` on a log scale (a perplexity falls from ~50,000 to ~100: linearly, a spike then a flat line)."""
    plt = pyplot()
    n_cols = min(4, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.5 * n_rows), squeeze=False)
    window = max(1, len(history) // 10)
    for ax, column in zip(axes.flat, columns):
        log = column in log_y
        ax.plot(history[x], history[column], color="tab:blue", alpha=0.35, linewidth=1)
        ax.plot(history[x], moving_average(history[column], window, log), color="tab:blue")
        if log:
            ax.set_yscale("log")
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def moving_average(values: pd.Series, window: int, log: bool = False) -> pd.Series:
    """Trailing mean over `window` rows; with `log`, of the logarithms (a geometric mean), so on a log
    axis one early value thousands of times the rest does not lift the whole window's average."""
    if log:
        return np.exp(np.log(values).rolling(window, min_periods=1).mean())
    return values.rolling(window, min_periods=1).mean()
