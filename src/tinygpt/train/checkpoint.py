"""Training checkpoints: one directory per training configuration, outside DVC's outputs.

DVC deletes a stage's outputs before it reruns the stage, so checkpoints kept under models/ would be
gone exactly when they are needed. They live in `.cache/pretrain/<key>/` instead, where the key hashes
everything that decides the weights (model and training params, device and precision, the token files,
the initial weights when train.init_from names some, the torch version and the stage's code); a rerun with the same key resumes, any change starts afresh in another directory.
A checkpoint also records how many processes wrote it, and resumes only with as many.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from tinygpt.core import io
from tinygpt.core.compute import ComputeParams
from tinygpt.core.errors import TinyGptError
from tinygpt.model.config import GPTConfig
from tinygpt.train.config import SCRATCH, TrainParams

CHECKPOINT_FILE = "checkpoint.pt"
KEY_FILE = "config.json"  # what the key was computed from, for a person looking at the cache

# Params that change when checkpoints are written but not the weights, the optimizer or the curves.
REPORT_ONLY_KEYS = ("checkpoint_interval",)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(files: list[Path]) -> str:
    """sha256 of a weights file; of its shards' digests, for a checkpoint saved in several files."""
    digests = [file_digest(f) for f in files]
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()


def key_material(config: GPTConfig, train_params: TrainParams, data_files: list[Path], code_version: str = "",
                 compute: ComputeParams = ComputeParams(), init: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the checkpoint key hashes. `init`: the initial weights' description (their sha256 among it),
    required unless train.init_from is scratch, so that other weights under the same name start afresh."""
    train = {k: v for k, v in dataclasses.asdict(train_params).items() if k not in REPORT_ONLY_KEYS}
    if train["nproc_per_node"] == 1:  # only above 1: single-process runs keep the keys they have without it
        del train["nproc_per_node"]
    if train["init_from"] == SCRATCH:  # likewise: runs from random weights keep their keys
        del train["init_from"]
        init = None
    elif init is None:
        raise ValueError(f"train.init_from = {train_params.init_from!r} needs the initial weights' description")
    material = {
        "model": config.to_dict(),
        "train": train,
        "compute": dataclasses.asdict(compute),  # the precision decides the weights
        "data": {Path(f).name: file_digest(f) for f in data_files},
        "torch": torch.__version__,  # kernels may change numerics between versions
        # A hash of the stage's code (tinygpt.pipeline.codedeps): edited code must not resume an old run's state.
        "code": code_version,
    }
    if init is not None:
        material["init"] = init
    return material


def run_key(material: dict[str, Any]) -> str:
    text = json.dumps(material, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_failure(err: Exception) -> str:
    """Why torch.load refused a file, in one line, without torch's advice to retry with weights_only=False
    (that would run whatever code the file carries)."""
    text = str(err).strip()
    if "weights_only" in text:
        return f"{type(err).__name__}: it holds objects other than tensors, numbers and strings"
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class CheckpointDir:
    """The checkpoint of one training configuration: written atomically, read back on resume."""

    def __init__(self, root: Path, material: dict[str, Any]):
        self.key = run_key(material)
        self.material = material
        self.path = Path(root) / self.key

    @property
    def file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def save(self, state: dict[str, Any]) -> None:
        """Replace the checkpoint; an interruption mid-write leaves the previous one intact."""
        io.write_json(self.path / KEY_FILE, self.material)
        with io.atomic_path(self.file) as tmp:
            torch.save({"key": self.key, **state}, tmp)

    def load(self, world_size: int = 1) -> dict[str, Any] | None:
        """The saved state, or None when this configuration has no checkpoint yet. `world_size` is the
        number of training processes of this run, which must be that of the run that saved it."""
        if not self.file.exists():
            return None
        try:
            # Only tensors, numbers, strings and containers are saved, so the safe loader suffices.
            state = torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise TinyGptError(
                f"{self.file}: not a valid training checkpoint ({load_failure(err)}); delete {self.path} "
                "to restart training from step 0"
            ) from err
        if state.get("key") != self.key:
            raise TinyGptError(f"{self.file}: belongs to another configuration; delete {self.path}")
        saved_by = state.get("world_size", 1)
        if saved_by != world_size:
            # Each process draws its own dropout masks, and the float sums of the gradient average
            # depend on how many there are: resumed otherwise, the run would not end where it would have.
            raise TinyGptError(
                f"{self.file}: was written by a run of {saved_by} training process(es), and this run has "
                f"{world_size}; rerun with the same train.nproc_per_node (and number of nodes) as that run, "
                f"or delete {self.path} to train from scratch")
        return state
