"""Figures of the reward-model and PPO training curves (matplotlib, Agg backend)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tinygpt import io
from tinygpt.evaluate import write_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(history: pd.DataFrame, columns: list[str], title: str, x: str = "step"):
    """One small panel per column against `x`, the raw values and a moving average."""
    plt = _pyplot()
    n_cols = min(4, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.5 * n_rows), squeeze=False)
    window = max(1, len(history) // 10)
    for ax, column in zip(axes.flat, columns):
        ax.plot(history[x], history[column], color="tab:blue", alpha=0.35, linewidth=1)
        ax.plot(history[x], history[column].rolling(window, min_periods=1).mean(), color="tab:blue")
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def proxy_vs_gold_figure(history: pd.DataFrame, oracle_name: str):
    """The reward-model (proxy) score and the oracle (gold) score over PPO steps, with the KL beneath.

    Reward hacking shows as the proxy climbing while the gold score stalls or falls.
    """
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    window = max(1, len(history) // 10)
    smooth = lambda column: history[column].rolling(window, min_periods=1).mean()  # noqa: E731
    top.plot(history["step"], smooth("reward_model_score"), color="tab:orange", label="reward model (proxy)")
    top.set_ylabel("reward model score (normalised)", color="tab:orange")
    gold = top.twinx()
    gold.plot(history["step"], smooth("gold_score"), color="tab:green", label=f"oracle '{oracle_name}' (gold)")
    gold.set_ylabel(f"oracle '{oracle_name}' score", color="tab:green")
    top.set_title(f"proxy vs gold during PPO (moving average over {window} steps)")
    bottom.plot(history["step"], history["kl"], color="tab:red", label="KL to reference")
    bottom.set(xlabel="PPO step", ylabel="KL (nats / sequence)")
    fig.tight_layout()
    return fig


def write_curves(
    history: list[dict], csv_path: Path, png_path: Path, columns: list[str], title: str
) -> pd.DataFrame:
    """The per-step metrics as CSV (for `dvc plots`) and as a PNG of panels; returns the table."""
    table = pd.DataFrame(history)
    io.write_text(csv_path, table.to_csv(index=False, float_format="%.6g"))
    write_figure(curves_figure(table, columns, title), png_path)
    return table
