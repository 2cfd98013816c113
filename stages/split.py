"""Stage split: contiguous train/val split by characters, cut at the nearest token boundary.
In: data/tokens/. Out: data/split/{train.bin, val.bin, split.json}, metrics/split.json."""
from tinygpt.core import io
from tinygpt.data.tokens import (read_offsets, read_tokens, split_tokens,
                                 write_tokens)
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage


def main() -> None:
    p = params.load_sections("split", "tracking")
    with tracking.stage_run("split", params.flatten({"split": p.split}), p.tracking.experiment) as run:
        run.log_dataset(paths.TOKENS_BIN, "input")
        tokens = read_tokens(paths.TOKENS_BIN)
        byte_offsets, char_offsets = read_offsets(paths.TOKEN_OFFSETS)
        train, val, cut = split_tokens(tokens, byte_offsets, char_offsets, p.split.val_fraction)
        write_tokens(paths.TRAIN_BIN, train.tokens)
        write_tokens(paths.VAL_BIN, val.tokens)
        summary = {"train": train.summary(), "val": val.summary(), "cut_token": cut, "val_fraction": p.split.val_fraction}
        io.write_json(paths.SPLIT_META, summary)
        metrics = run.finish(summary, artifacts=[paths.SPLIT_META])
        io.write_json(paths.metrics_file("split"), metrics)
        print(f"split: {len(train.tokens):,} train / {len(val.tokens):,} val tokens")


if __name__ == "__main__":
    run_stage(main)
