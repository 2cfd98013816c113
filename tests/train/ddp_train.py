"""One process of a data-parallel training run, started by tests/train/test_distributed.py under torchrun.

argv[1] is a JSON file: the model, train and compute params, the token files, the checkpoint root and `out`, where
rank 0 saves the step rows, the evaluations and every process's final weights (gathered to it); with
`crash_at`, every process stops right after that optimizer step, as a killed run would.
"""
import json
import sys
from pathlib import Path

import torch

from tinygpt.core.compute import ComputeParams
from tinygpt.model.config import GPTConfig
from tinygpt.pipeline.cli import run_stage
from tinygpt.train import distributed
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import train


def crash_at(crash_step: int | None):
    def on_step(step, metrics):
        if step == crash_step and "loss" in metrics:
            raise SystemExit(3)
    return on_step


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    p, compute = TrainParams(**spec["train"]), ComputeParams(**spec["compute"])
    with distributed.process_group(compute.device) as world:
        result = train(GPTConfig(**spec["model"]), p, Path(spec["train_path"]), Path(spec["val_path"]),
                       Path(spec["checkpoint_root"]), on_step=crash_at(spec.get("crash_at")), world=world,
                       compute=compute)
        weights = world.gather({name: t.detach().clone() for name, t in result.model.state_dict().items()})
        if world.is_main:
            torch.save({"history": result.history, "evals": result.evals, "weights": weights,
                        "metrics": result.metrics, "resumed_from": result.resumed_from}, spec["out"])


if __name__ == "__main__":
    run_stage(main)
