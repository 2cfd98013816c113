"""Stage tokenize: GPT-2 BPE over the whole corpus.
In: data/raw/input.txt. Out: data/tokens/{tokens.bin, offsets.npy, meta.json}, metrics/tokenize.json."""
from tinygpt.core import io
from tinygpt.data import tokenizer
from tinygpt.data.tokens import (read_corpus, tokenize_text, write_offsets,
                                 write_tokens)
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage


def main() -> None:
    p = params.load_sections("tokenize", "tracking")
    with tracking.stage_run("tokenize", params.flatten({"tokenize": p.tokenize}), p.tracking.experiment) as run:
        run.log_dataset(paths.RAW_CORPUS, "input")
        text = read_corpus(paths.RAW_CORPUS)
        corpus = tokenize_text(text, tokenizer.get_encoding(p.tokenize.encoding))
        write_tokens(paths.TOKENS_BIN, corpus.tokens)
        write_offsets(paths.TOKEN_OFFSETS, corpus.byte_offsets, corpus.char_offsets)
        meta = {
            "tokens": len(corpus.tokens),
            "characters": corpus.n_chars,
            "bytes": corpus.n_bytes,
            "distinct_tokens": int(len(set(corpus.tokens.tolist()))),
            "vocab_size": tokenizer.N_VOCAB,
            "tokenizer": p.tokenize.encoding,
            "tokenizer_files_sha256": tokenizer.file_hashes(),
            "dtype": "uint16",
        }
        io.write_json(paths.TOKENS_META, meta)
        metrics = run.finish(meta, artifacts=[paths.TOKENS_META])
        io.write_json(paths.metrics_file("tokenize"), metrics)
        print(f"tokenize: {corpus.n_chars:,} characters -> {len(corpus.tokens):,} tokens")



if __name__ == "__main__":
    run_stage(main)
