"""Stage tokenize: GPT-2 BPE over the whole corpus, in parallel and streamed to disk.
In: data/raw/{input.txt, documents.npy}. Out: data/tokens/{tokens.bin, offsets.npy, documents.npy, meta.json},
metrics/tokenize.json."""
from dataclasses import asdict

from tinygpt.core import io, timing
from tinygpt.data import tokenizer
from tinygpt.data.config import TokenizeParams
from tinygpt.data.corpus_tokens import TokenFiles, tokenize_corpus
from tinygpt.data.tokens import read_document_index
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.params import TrackingParams


def main() -> None:
    p = params.load_sections(tokenize=TokenizeParams, tracking=TrackingParams)
    with tracking.stage_run("tokenize", params.flatten({"tokenize": p.tokenize}), p.tracking) as run:
        run.log_dataset(paths.RAW_CORPUS, "input")
        out = TokenFiles(paths.TOKENS_BIN, paths.TOKEN_OFFSETS, paths.TOKEN_DOCUMENTS)
        with timing.phase("data"):
            summary = tokenize_corpus(paths.RAW_CORPUS, read_document_index(paths.RAW_DOCUMENTS, "download"),
                                      tokenizer.get_encoding(p.tokenize.encoding), out, threads=p.tokenize.threads)
        meta = {**asdict(summary), "vocab_size": tokenizer.N_VOCAB, "tokenizer": p.tokenize.encoding,
                "tokenizer_files_sha256": tokenizer.file_hashes()}
        io.write_json(paths.TOKENS_META, meta)
        metrics = run.finish(meta, artifacts=[paths.TOKENS_META])
        io.write_json(paths.metrics_file("tokenize"), metrics)
        print(f"tokenize: {summary.characters:,} characters in {summary.documents:,} document(s) -> "
              f"{summary.tokens:,} tokens ({summary.dtype})")


if __name__ == "__main__":
    run_stage(main)
