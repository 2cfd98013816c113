"""What the compare stage writes: the comparison table (CSV, Markdown) and the reliability overlay, and
each model's evaluate outputs in a folder of its own (<label>/)."""
from __future__ import annotations

from pathlib import Path

from tinygpt.core import io
from tinygpt.core.figures import write_figure
from tinygpt.eval.compare import (CompareResult, reliability_overlay,
                                  table_markdown)
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.evaluate import write_evaluation


def write_compare(result: CompareResult, plots_dir: Path, reports_dir: Path) -> list[Path]:
    """The table and the overlay, and each model's evaluate outputs in `<folder>/<label>/`. Both folders are
    built anew beside the old ones and swapped in whole (io.atomic_dir), so a model of an earlier run that
    this run could not load leaves no folder behind. Returns the files written."""
    plots_dir, reports_dir = Path(plots_dir), Path(reports_dir)
    with io.atomic_dir(plots_dir) as plots, io.atomic_dir(reports_dir) as reports:
        io.write_text(reports / paths.COMPARE_TABLE_CSV.name, result.table.to_csv(index=False))
        io.write_text(reports / paths.COMPARE_TABLE_MD.name, table_markdown(result))
        write_figure(reliability_overlay(result.reports), plots / paths.RELIABILITY_OVERLAY_PNG.name)
        for r in result.reports:
            write_evaluation(r.evaluation, plots / r.label, reports / r.label, title=r.name)
    return sorted(path for folder in (plots_dir, reports_dir) for path in folder.rglob("*") if path.is_file())
