"""Stage report: one MLflow pipeline run per distinct pipeline state, summary.md and an HTML dashboard.
In: every stage's metrics/<stage>.json, plots/, reports/. Out: reports/summary.md, reports/dashboard.html,
metrics/report.json."""
from tinygpt.core import io
from tinygpt.pipeline import params, paths, report, sections
from tinygpt.pipeline.cli import run_stage


def main() -> None:
    p = params.load_sections(**sections.SECTIONS)  # the pipeline run records every parameter
    recorded = {k: v for k, v in params.flatten(p).items() if k not in params.NOT_DVC_DEPS}
    state = report.PipelineState(recorded, report.read_stage_metrics())
    result = report.publish(state, p.tracking)
    io.write_json(paths.metrics_file("report"), result)
    if result["pipeline_run_id"] is None:
        print(f"report: untracked (no MLflow pipeline run); summary in {paths.SUMMARY_MD}")
    else:
        verb = "logged" if result["new_run"] else "already logged as"
        print(f"report: pipeline run {verb} {result['pipeline_run_id']}; summary in {paths.SUMMARY_MD}")


if __name__ == "__main__":
    run_stage(main)
