"""What the frontier stage writes: the gold-versus-KL figure, its points as one CSV, and the table."""
from __future__ import annotations

import pandas as pd

from tinygpt.core import io
from tinygpt.core.figures import write_figure
from tinygpt.pipeline import paths
from tinygpt.rlhf.frontier import frontier_figure, frontier_markdown


def write_outputs(
    best_of_n: pd.DataFrame, runs: dict[str, tuple[pd.DataFrame, int]], oracle_name: str, soft: pd.DataFrame,
) -> None:
    write_figure(frontier_figure(best_of_n, runs, oracle_name, soft), paths.FRONTIER_PNG)
    # One long table (method, kl, gold_gain, ...) so `dvc plots` can draw all methods from one file.
    points = [best_of_n.assign(method="best-of-n")[["method", "n", "kl", "gold_gain", "proxy_gain"]],
              soft.assign(method="soft best-of-n")[["method", "beta", "kl", "gold_gain", "proxy_gain"]]]
    for method, (table, _) in runs.items():
        report = table[table["set"] == "report"].sort_values("step")
        points.append(report.assign(method=method)[["method", "step", "kl", "gold_gain", "proxy_gain"]])
    io.write_text(paths.FRONTIER_POINTS_CSV, pd.concat(points).to_csv(index=False, float_format="%.6g"))
    io.write_text(paths.FRONTIER_TABLE_MD, frontier_markdown(best_of_n, runs, soft))
