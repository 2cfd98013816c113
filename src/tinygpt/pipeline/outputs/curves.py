"""Per-step training curves as CSV (for `dvc plots`) and as a PNG of panels: pretrain, reward and rlhf."""
from __future__ import annotations

from pathlib import Path
from typing import Collection

import pandas as pd

from tinygpt.core import io
from tinygpt.core.figures import curves_figure, write_figure


def write_curves(
    history: list[dict], csv_path: Path, png_path: Path, columns: list[str], title: str,
    log_y: Collection[str] = (),
) -> pd.DataFrame:
    """The per-step metrics as CSV and as a PNG of one panel per column (`log_y`'s on a log scale);
    returns the table."""
    table = pd.DataFrame(history)
    io.write_text(csv_path, table.to_csv(index=False, float_format="%.6g"))
    write_figure(curves_figure(table, columns, title, log_y=log_y), png_path)
    return table
