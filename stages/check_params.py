"""Stage check_params: validate every section of params.yaml before any other stage runs.
In: params.yaml (the whole file). Out: data/params/checked.txt, metrics/check_params.json.

Every other stage reads only its own sections, so a typo in a section whose stages are cached would
pass unnoticed; this stage depends on the whole file and is upstream of all the others. Its output is
the same text whenever the file is valid, so a changed key reruns only the stages that read it. It
never imports torch (tests/pipeline/test_check_params.py checks that), so it costs about a second plus MLflow."""
from tinygpt.core import io
from tinygpt.pipeline import params, paths, sections as all_sections, tracking
from tinygpt.pipeline.cli import run_stage

CHECKED = "params.yaml passed validation: every section and key is known, typed and in range.\n"


def main() -> None:
    sections = all_sections.load_all()
    flat = params.flatten(sections)
    with tracking.stage_run("check_params", flat, sections["tracking"]) as run:
        io.write_text(paths.PARAMS_CHECKED, CHECKED)
        metrics = run.finish({"sections": len(sections), "keys": len(flat)})
        io.write_json(paths.metrics_file("check_params"), metrics)
        print(f"check_params: {len(flat)} keys in {len(sections)} sections are valid")


if __name__ == "__main__":
    run_stage(main)
