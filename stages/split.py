"""Stage split: train/val by characters; one document is cut at the nearest token boundary, several are
split by whole documents (drawn with split.seed).
In: data/tokens/. Out: data/split/{train.bin, val.bin, split.json}, metrics/split.json."""
from tinygpt.core import io
from tinygpt.data.config import SplitParams
from tinygpt.data.tokens import (read_document_index, read_offsets, read_tokens, split_documents, split_tokens,
                                 write_tokens)
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.params import TrackingParams


def main() -> None:
    p = params.load_sections(split=SplitParams, tracking=TrackingParams)
    with tracking.stage_run("split", params.flatten({"split": p.split}), p.tracking) as run:
        run.log_dataset(paths.TOKENS_BIN, "input")
        meta = io.read_json(paths.TOKENS_META)
        tokens = read_tokens(paths.TOKENS_BIN, meta["dtype"])
        byte_offsets, char_offsets = read_offsets(paths.TOKEN_OFFSETS)
        documents = read_document_index(paths.TOKEN_DOCUMENTS, "tokenize")
        if len(documents) > 2:
            train, val, val_documents = split_documents(tokens, byte_offsets, char_offsets, documents,
                                                        p.split.val_fraction, p.split.seed)
            where = {"documents": len(documents) - 1, "val_documents": len(val_documents)}
        else:
            train, val, cut = split_tokens(tokens, byte_offsets, char_offsets, p.split.val_fraction)
            where = {"cut_token": cut}
        write_tokens(paths.TRAIN_BIN, train.tokens, meta["dtype"])
        write_tokens(paths.VAL_BIN, val.tokens, meta["dtype"])
        summary = {"train": train.summary(), "val": val.summary(), **where, "val_fraction": p.split.val_fraction,
                   "dtype": meta["dtype"]}
        io.write_json(paths.SPLIT_META, summary)
        metrics = run.finish(summary, artifacts=[paths.SPLIT_META])
        io.write_json(paths.metrics_file("split"), metrics)
        print(f"split: {len(train.tokens):,} train / {len(val.tokens):,} val tokens")


if __name__ == "__main__":
    run_stage(main)
