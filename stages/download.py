"""Stage download: fetch the raw corpus and verify its pinned sha256.
In: params data.*. Out: data/raw/input.txt, metrics/download.json."""
from tinygpt.core import io
from tinygpt.data.download import download_corpus
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage


def main() -> None:
    p = params.load_sections("data", "tracking")
    with tracking.stage_run("download", params.flatten({"data": p.data}), p.tracking.experiment) as run:
        result = download_corpus([p.data.url, *p.data.mirrors], p.data.sha256, paths.RAW_CORPUS, p.data.timeout_s)
        run.set_tags({"download.source": result.source})
        metrics = run.finish({"bytes": result.n_bytes, "sha256": result.sha256, "source": result.source})
        io.write_json(paths.metrics_file("download"), metrics)
        print(f"download: {result.n_bytes:,} bytes from {result.source} (sha256 ok)")


if __name__ == "__main__":
    run_stage(main)
