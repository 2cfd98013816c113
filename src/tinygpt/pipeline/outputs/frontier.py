"""What the frontier stage writes: the gold-versus-KL figure, its points as one CSV, and the table."""
from __future__ import annotations

import pandas as pd

from tinygpt.core import io
from tinygpt.core.figures import write_figure
from tinygpt.pipeline import paths
from tinygpt.rlhf.frontier import Golds, frontier_figure, frontier_markdown


def write_outputs(
    best_of_n: pd.DataFrame, runs: dict[str, tuple[pd.DataFrame, int]], golds: Golds, soft: pd.DataFrame,
) -> None:
    write_figure(frontier_figure(best_of_n, runs, golds, soft), paths.FRONTIER_PNG)
    # One long table (method, kl, gold_gain, ...) so `dvc plots` can draw all methods from one file.
    values = ["kl", "gold_gain", *(["heldout_gold_gain"] if "heldout_gold_gain" in best_of_n else []), "proxy_gain"]
    points = [best_of_n.assign(method="best-of-n")[["method", "n", *values]],
              soft.assign(method="soft best-of-n")[["method", "beta", *values]]]
    for method, (table, _) in runs.items():
        report = table[table["set"] == "report"].sort_values("step")
        points.append(report.assign(method=method)[["method", "step", *values]])
    io.write_text(paths.FRONTIER_POINTS_CSV, pd.concat(points).to_csv(index=False, float_format="%.6g"))
    io.write_text(paths.FRONTIER_TABLE_MD, frontier_markdown(best_of_n, runs, soft))
