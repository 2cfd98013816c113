"""Stage pretrain: train the GPT on the train split, resuming from the configuration's last checkpoint.
In: data/split/train.bin, val.bin. Out: models/pretrain/, metrics/pretrain.json, plots/pretrain/.
Checkpoints: .cache/pretrain/<config hash>/.

With train.nproc_per_node > 1 the stage starts itself again under torchrun, as that many processes;
started by torchrun (several machines), it runs as one of its processes. Rank 0 alone logs to MLflow
and writes the outputs and checkpoints; the other processes only train."""
import sys
from types import SimpleNamespace

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.data.tokens import read_tokens
from tinygpt.model import weights
from tinygpt.model.config import GPTConfig
from tinygpt.pipeline import codedeps, params, paths, registry, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs import pretrain as pretrain_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.train import distributed
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import TrainResult, train


def main() -> None:
    p = params.load_sections(model=GPTConfig, train=TrainParams, compute=ComputeParams, tracking=TrackingParams)
    if distributed.needs_launch(p.train.nproc_per_node):
        sys.exit(distributed.launch("stages.pretrain", p.train.nproc_per_node))
    with distributed.process_group(p.compute.device) as world:
        if world.is_main:
            train_and_write(p, world)
        else:  # no MLflow run, no files: only its share of the training
            run_training(p, world)


def run_training(p: SimpleNamespace, world: distributed.World, on_step=None) -> TrainResult:
    return train(p.model, p.train, paths.TRAIN_BIN, paths.VAL_BIN, paths.PRETRAIN_CACHE, on_step=on_step,
                 code_version=codedeps.code_digest("tinygpt.train.loop"), world=world, compute=p.compute)


def train_and_write(p: SimpleNamespace, world: distributed.World) -> None:
    flat = params.flatten({"model": p.model, "train": p.train, "compute": p.compute})
    with tracking.stage_run("pretrain", flat, p.tracking, system_metrics=True) as run:
        run.log_dataset(paths.TRAIN_BIN, "training")
        run.log_dataset(paths.VAL_BIN, "validation")
        with timing.phase("training"):
            result = run_training(p, world, on_step=run.log_step)
        weights.save_model(result.model, paths.PRETRAIN_DIR)
        device = next(result.model.parameters()).device
        with timing.phase("evaluation"):
            whole_val = pretrain_outputs.whole_split(result.model, read_tokens(paths.VAL_BIN),
                                                     io.read_json(paths.SPLIT_META)["val"]["bytes"], device,
                                                     result.metrics["precision"])
        written = pretrain_outputs.write_plots(result)
        run.set_tags({"checkpoint_dir": result.checkpoint_dir, "resumed_from_step": result.resumed_from})
        metrics = {**result.metrics, "whole_val": whole_val, "resumed_from_step": result.resumed_from}
        registry.log_stage_model("pretrain", p.tracking.experiment, paths.PRETRAIN_DIR, metrics)
        metrics = run.finish(metrics, artifacts=written)
        io.write_json(paths.metrics_file("pretrain"), metrics)
        final = result.metrics["final"]
        print(f"pretrain: {result.metrics['steps']} steps, val loss {whole_val['loss']:.4f} (perplexity "
              f"{whole_val['perplexity']:.1f}, {whole_val['bits_per_byte']:.3f} bits/byte) on the whole val split, "
              f"{final['val_loss']:.4f} on the fixed batches; {result.metrics['tokens_per_s']:.0f} tokens/s, "
              f"{metrics['time']['total_s']:.0f} s, peak RSS {result.metrics['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    run_stage(main)
