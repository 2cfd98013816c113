"""Stage download: the raw corpus from data.source (a URL pinned by sha256, local text files, or a Hugging
Face dataset) as one text file and the byte offset of each document.
In: params data.*, data/corpus/. Out: data/raw/{input.txt, documents.npy, manifest.json}, metrics/download.json."""
from tinygpt.core import io, timing
from tinygpt.data.config import DataParams
from tinygpt.data.sources import fetch_corpus
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.params import TrackingParams


def main() -> None:
    p = params.load_sections(data=DataParams, tracking=TrackingParams)
    with tracking.stage_run("download", params.flatten({"data": p.data}), p.tracking) as run:
        with timing.phase("data"):
            summary = fetch_corpus(p.data, paths.RAW_CORPUS, paths.RAW_DOCUMENTS)
        io.write_json(paths.RAW_MANIFEST, summary.as_dict())
        run.set_tags({"download.source": summary.source, "download.kind": p.data.source})
        metrics = run.finish({"bytes": summary.bytes, "sha256": summary.sha256, "source": summary.source,
                              "documents": summary.documents}, artifacts=[paths.RAW_MANIFEST])
        io.write_json(paths.metrics_file("download"), metrics)
        checked = "sha256 ok" if p.data.source == "url" else f"sha256 {summary.sha256[:12]}"
        print(f"download: {summary.bytes:,} bytes in {summary.documents:,} document(s) from {summary.source} ({checked})")


if __name__ == "__main__":
    run_stage(main)
