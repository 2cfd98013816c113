"""One view of a whole pipeline execution: every stage's metrics, run links, curves and samples.

The report stage reads the metrics JSON each stage wrote (each carries the MLflow run id of the run
that produced it, also when DVC restored the stage from its cache), and turns them into one MLflow
"pipeline" run per distinct pipeline state, `reports/summary.md` and a self-contained HTML dashboard.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tinygpt.core import io
from tinygpt.pipeline import paths, tracking
from tinygpt.pipeline.params import TrackingParams

# Pipeline order; the report reads each stage's metrics/<stage>.json.
STAGES = ("download", "tokenize", "split", "pretrain", "evaluate", "compare", "sft", "preferences", "reward",
          "best_of_n", "rlhf", "dpo", "frontier")

# (name in MLflow and the summary, stage, dotted key in that stage's metrics JSON). Missing keys are
# skipped, so a stage that gains or loses a metric never breaks the report.
HEADLINES: tuple[tuple[str, str, str], ...] = (
    ("split/train_tokens", "split", "train.tokens"),
    ("split/val_tokens", "split", "val.tokens"),
    ("pretrain/val_loss", "pretrain", "whole_val.loss"),  # every val token, not the fixed batches
    ("pretrain/val_bits_per_byte", "pretrain", "whole_val.bits_per_byte"),
    ("pretrain/fixed_batches_val_loss", "pretrain", "final.val_loss"),
    ("pretrain/best_val_loss", "pretrain", "best.val_loss"),
    ("pretrain/tokens_seen", "pretrain", "tokens_seen"),
    ("pretrain/tokens_per_s", "pretrain", "tokens_per_s"),
    ("pretrain/total_seconds", "pretrain", "time.total_s"),  # the stage from process start to its metrics
    ("pretrain/peak_rss_mib", "pretrain", "peak_rss_mib"),
    ("evaluate/val_loss", "evaluate", "val.loss"),
    ("evaluate/val_perplexity", "evaluate", "val.perplexity"),
    ("evaluate/val_bits_per_byte", "evaluate", "val.bits_per_byte"),
    ("evaluate/train_loss", "evaluate", "train.loss"),
    ("evaluate/ece", "evaluate", "calibration.ece"),
    ("evaluate/temperature", "evaluate", "calibration.temperature"),
    ("compare/ours_val_loss", "compare", "ours.val.loss"),
    ("compare/gpt2_val_loss", "compare", "gpt2.val.loss"),
    ("compare/gpt2_val_bits_per_byte", "compare", "gpt2.val.bits_per_byte"),
    ("compare/fidelity_max_abs_logit_diff", "compare", "fidelity.max_abs_logit_diff"),
    ("compare/forward_speed_ours_over_hf", "compare", "ours.speed.ratio.forward_ours_over_hf"),
    ("sft/reply_nll_before", "sft", "before.report.nll"),  # report-set pairs, nats per reply token
    ("sft/reply_nll_after", "sft", "after.report.nll"),
    ("sft/reply_text_nll_after", "sft", "after.report.text_nll"),
    ("sft/replies_ended_after", "sft", "after.replies.ended_share"),
    ("preferences/train_pairs", "preferences", "train.pairs"),
    ("reward/report_accuracy", "reward", "report.accuracy"),
    ("best_of_n/gold_gain_n16", "best_of_n", "report.16.gold_gain"),
    ("best_of_n/gold_gain_n64", "best_of_n", "report.64.gold_gain"),
    ("best_of_n/heldout_gold_gain_n16", "best_of_n", "report.16.heldout_gold_gain"),
    ("rlhf/gold_score_before", "rlhf", "before.oracle_mean"),
    ("rlhf/gold_score_after", "rlhf", "after.oracle_mean"),
    ("rlhf/gold_score_gain", "rlhf", "change.oracle_mean"),
    ("rlhf/heldout_gold_gain", "rlhf", "change.heldout_oracle_mean"),
    ("rlhf/reward_model_gain", "rlhf", "change.reward_model_mean"),
    ("rlhf/kl", "rlhf", "after.kl_mean"),
    ("rlhf/val_perplexity_change", "rlhf", "change.val_perplexity_relative"),
    ("rlhf/selected_step", "rlhf", "selected_step"),
    ("dpo/gold_score_gain", "dpo", "change.oracle_mean"),
    ("dpo/heldout_gold_gain", "dpo", "change.heldout_oracle_mean"),
    ("dpo/kl", "dpo", "after.kl_mean"),
    ("dpo/val_perplexity_change", "dpo", "change.val_perplexity_relative"),
    ("frontier/ppo_gain_over_best_of_n", "frontier", "ppo.gain_over_best_of_n"),
    ("frontier/dpo_gain_over_best_of_n", "frontier", "dpo.gain_over_best_of_n"),
    ("frontier/ppo_heldout_gain_over_best_of_n", "frontier", "ppo.heldout_gain_over_best_of_n"),
    ("frontier/dpo_heldout_gain_over_best_of_n", "frontier", "dpo.heldout_gain_over_best_of_n"),
    ("frontier/ppo_repeated_words_over_best_of_n", "frontier", "ppo.repeated_words_change_over_best_of_n"),
    ("frontier/dpo_repeated_words_over_best_of_n", "frontier", "dpo.repeated_words_change_over_best_of_n"),
)


@dataclass
class PipelineState:
    """What the report knows about one pipeline execution."""

    params: dict[str, Any]  # flattened params.yaml
    stage_metrics: dict[str, dict]  # stage -> its metrics JSON

    def stage_run_ids(self) -> dict[str, str]:
        return {s: m["mlflow_run_id"] for s, m in self.stage_metrics.items() if m.get("mlflow_run_id")}

    def fingerprint(self) -> str:
        """Identical params and identical stage outputs (each naming its run) give the same state."""
        blob = json.dumps({"params": self.params, "metrics": self.stage_metrics}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_stage_metrics(stages: tuple[str, ...] = STAGES) -> dict[str, dict]:
    """Every stage's metrics JSON; a missing one names the stage to run."""
    found = {}
    for stage in stages:
        path = paths.metrics_file(stage)
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found; run `dvc repro {stage}` before the report")
        found[stage] = json.loads(path.read_text())
    return found


def headline_metrics(stage_metrics: dict[str, dict]) -> dict[str, float]:
    found = {}
    for name, stage, key in HEADLINES:
        value = io.lookup(stage_metrics.get(stage, {}), key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def all_stage_metrics(stage_metrics: dict[str, dict]) -> dict[str, float]:
    """Every numeric metric of every stage as '<stage>/<dotted key>', for side-by-side comparison."""
    flat = {}
    for stage, metrics in stage_metrics.items():
        for key, value in tracking.flatten_metrics(metrics).items():
            flat[f"{stage}/{key}"] = value
    return flat


def pipeline_tags(state: PipelineState) -> dict[str, str]:
    tags = {f"stage_run.{stage}": run_id for stage, run_id in state.stage_run_ids().items()}
    tags["pipeline.state"] = state.fingerprint()
    tags["kind"] = "pipeline"
    return tags


def stage_links_note(mlflow_client, state: PipelineState) -> str:
    """The pipeline run's description (its Overview page in the UI): a link to each stage's run.

    The stage runs cannot be this run's children in MLflow's sense: a run has one parent, but DVC
    restores an unchanged stage from its cache, so one stage run belongs to every pipeline state that
    reused it; and a stage runs before the report knows the state it belongs to."""
    lines = ["Stage runs of this pipeline state (one per stage; DVC reuses a cached stage's run):", ""]
    for stage, run_id in state.stage_run_ids().items():
        try:
            experiment = tracking.with_retry(lambda: mlflow_client.get_run(run_id)).info.experiment_id
            lines.append(f"- [{stage}](#/experiments/{experiment}/runs/{run_id})")
        except Exception:  # a deleted run, or metrics copied from another store: name it without a link
            lines.append(f"- {stage}: `{run_id}` (not in this store)")
    return "\n".join(lines)


def find_pipeline_run(mlflow_client, experiment_id: str, fingerprint: str) -> str | None:
    """The run already logged for this exact pipeline state, if any (so reruns add no duplicate)."""
    runs = tracking.with_retry(
        lambda: mlflow_client.search_runs(
            [experiment_id], filter_string=f"tags.`pipeline.state` = '{fingerprint}'", max_results=1
        )
    )
    return runs[0].info.run_id if runs else None


# ---------------------------------------------------------------- summary.md and the dashboard


def stage_figures(stage: str) -> list[Path]:
    return sorted(paths.plots_dir(stage).rglob("*.png")) if paths.plots_dir(stage).exists() else []


def stage_documents(stage: str) -> list[Path]:
    """Markdown a stage wrote for people: tables, next-token probabilities, samples."""
    docs = sorted((paths.REPORTS / stage).rglob("*.md")) if (paths.REPORTS / stage).exists() else []
    return docs + sorted(paths.REPORTS.glob(f"{stage}_*.md"))


def format_value(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def summary_markdown(state: PipelineState, headlines: dict[str, float], pipeline_run_id: str | None) -> str:
    lines = [
        "# tinygpt pipeline summary",
        "",
        (f"MLflow pipeline run `{pipeline_run_id}`" if pipeline_run_id else "untracked (no MLflow run)")
        + f" · state `{state.fingerprint()}`",
        "",
        "## Headline metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| `{name}` | {format_value(value)} |" for name, value in headlines.items()],
        "",
        "## Stage runs",
        "",
        "| stage | MLflow run |",
        "|---|---|",
        *[f"| {stage} | `{run_id}` |" for stage, run_id in state.stage_run_ids().items()],
        "",
    ]
    for stage in STAGES:
        figures, docs = stage_figures(stage), stage_documents(stage)
        if not figures and not docs:
            continue
        lines += [f"## {stage}", ""]
        lines += [f"![{figure.stem}](../{figure.as_posix()})" for figure in figures]
        for doc in docs:
            lines += ["", f"### {doc.relative_to(paths.REPORTS).as_posix()}", "", doc.read_text().strip(), ""]
        lines.append("")
    return "\n".join(lines)


def inline_figures(markdown_text: str) -> str:
    """Replace each `![..](../plots/x.png)` link by a data URI, so the page needs no other file."""
    lines = []
    for line in markdown_text.splitlines():
        if line.startswith("![") and "](../" in line:
            source = Path(line.split("](../", 1)[1].rstrip(")"))
            if source.exists():
                data = base64.b64encode(source.read_bytes()).decode()
                line = f"![{source.as_posix()}](data:image/png;base64,{data})"
        lines.append(line)
    return "\n".join(lines)


def dashboard_html(markdown_text: str) -> str:
    """The summary rendered as one self-contained HTML page (figures inlined)."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    renderer.validateLink = lambda url: True  # allow our data: URIs (the text is our own, not user input)
    body = renderer.render(inline_figures(markdown_text))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tinygpt pipeline</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )


# ---------------------------------------------------------------- the pipeline run


def pipeline_experiment(stage_experiment: str) -> str:
    """Pipeline runs get their own experiment, so the MLflow UI lists one row per pipeline execution."""
    return f"{stage_experiment}-pipeline"


def write_outputs(state: PipelineState, pipeline_run_id: str | None) -> tuple[str, dict[str, float]]:
    headlines = headline_metrics(state.stage_metrics)
    markdown_text = summary_markdown(state, headlines, pipeline_run_id)
    io.write_text(paths.SUMMARY_MD, markdown_text + "\n")
    io.write_text(paths.DASHBOARD_HTML, dashboard_html(markdown_text))
    return markdown_text, headlines


def publish(state: PipelineState, settings: TrackingParams) -> dict[str, Any]:
    """Log the pipeline run in `<experiment>-pipeline` (unless this exact state already has one) and write
    the summary files; untracked (no run id) when the store is down and `settings.required` is false.

    Returns the report's metrics: the pipeline run id, whether it was new, the state and the headlines.
    """
    experiment = pipeline_experiment(settings.experiment)
    fingerprint = state.fingerprint()
    mlflow_client = tracking.open_client(settings.required)
    if mlflow_client is None:
        _, headlines = write_outputs(state, None)
        return {"pipeline_run_id": None, "new_run": False, "state": fingerprint, "headlines": headlines}
    exp_id = tracking.experiment_id(mlflow_client, experiment)
    existing = find_pipeline_run(mlflow_client, exp_id, fingerprint)
    if existing:
        _, headlines = write_outputs(state, existing)
        return {"pipeline_run_id": existing, "new_run": False, "state": fingerprint, "headlines": headlines}
    tags = {**pipeline_tags(state), "mlflow.note.content": stage_links_note(mlflow_client, state)}
    with tracking.stage_run("report", state.params, replace(settings, experiment=experiment), "pipeline",
                            tags) as run:
        _, headlines = write_outputs(state, run.run_id)
        run.log_metrics({**all_stage_metrics(state.stage_metrics), **headlines})
        for artifact in (paths.SUMMARY_MD, paths.DASHBOARD_HTML, Path("dvc.lock"), Path("params.yaml")):
            run.log_artifact(artifact)
        return {"pipeline_run_id": run.run_id, "new_run": True, "state": fingerprint, "headlines": headlines}
