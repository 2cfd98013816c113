"""What the evaluate stage writes (and the compare stage, once per model in its own folders): the
reliability bins and diagram, the next-token inspection and the samples."""
from __future__ import annotations

from pathlib import Path

from tinygpt.core import io
from tinygpt.core.figures import write_figure
from tinygpt.eval import inspection
from tinygpt.eval.evaluate import EvaluationResult, reliability_figure
from tinygpt.pipeline import paths


def write_evaluation(result: EvaluationResult, out_dir: Path, reports_dir: Path | None = None,
                     title: str = "") -> list[Path]:
    """Bins CSV and reliability PNG into `out_dir`; next tokens and samples (JSON + Markdown) into
    `reports_dir` (default `out_dir`). Returns the files written, for logging as artifacts."""
    out_dir = Path(out_dir)
    reports_dir = out_dir if reports_dir is None else Path(reports_dir)
    files = {
        "csv": out_dir / paths.RELIABILITY_CSV.name,
        "png": out_dir / paths.RELIABILITY_PNG.name,
        "tokens_json": reports_dir / paths.NEXT_TOKENS_JSON.name,
        "tokens_md": reports_dir / paths.NEXT_TOKENS_MD.name,
        "samples_json": reports_dir / paths.SAMPLES_JSON.name,
        "samples_md": reports_dir / paths.SAMPLES_MD.name,
    }
    io.write_text(files["csv"], result.bins.to_csv(index=False, float_format="%.6f"))
    write_figure(reliability_figure(result.bins, result.metrics["calibration"]["ece"], title), files["png"])
    io.write_json(files["tokens_json"], result.inspection)
    io.write_text(files["tokens_md"], inspection.next_tokens_markdown(result.inspection))
    io.write_json(files["samples_json"], {"decoding": result.decoding, "samples": result.samples})
    io.write_text(files["samples_md"], inspection.samples_markdown(result.samples, result.decoding))
    return list(files.values())
