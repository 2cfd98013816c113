"""The weights pretraining starts from (train.init_from): random, or a model of the same shape read from one of
our model folders, a Hugging Face GPT-2 folder or a hub id. Every process of a distributed run loads the same
source, so all start equal."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from tinygpt.core.errors import TinyGptError
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.loading import NamedModel, load_named
from tinygpt.train.checkpoint import weights_digest
from tinygpt.train.config import SCRATCH, TrainParams

# GPTConfig keys in which train.init_from's model may differ from params.yaml's: not part of the weights.
SHAPE_FREE = ("dropout",)


class InitFromError(TinyGptError):
    """train.init_from names weights that cannot be loaded, or that have another shape than the model section."""


@dataclass
class InitWeights:
    """The weights training starts from (train.init_from), and their description for the metrics and the
    checkpoint key: {"from": "scratch"}, or the source, its format and the sha256 of its weights file."""

    model: GPT | None  # None: random weights
    info: dict


def init_weights(config: GPTConfig, train_params: TrainParams) -> InitWeights:
    """The model train.init_from names, as a GPT of the model section's config (its dropout): the shapes
    must agree, since adopting the source's silently would train another model than params.yaml says."""
    name = train_params.init_from
    if name == SCRATCH:
        return InitWeights(None, {"from": SCRATCH})
    named = load_init(name)
    check_shape(name, named.model.config, config)
    model = GPT(config)
    model.load_state_dict(named.model.state_dict())
    return InitWeights(model, {"from": name, "format": named.format, "sha256": weights_digest(named.weights_files)})


def load_init(name: str) -> NamedModel:
    """The model directory or hub id `name`, or an InitFromError that says what to give instead."""
    try:
        return load_named(name)
    except (TinyGptError, FileNotFoundError) as err:  # weights.read_config_json: a folder without config.json
        raise InitFromError(f"train.init_from {name}: {init_failure(name, err)}") from err


def init_failure(name: str, err: Exception) -> str:
    """Why `name` did not load, and what to do: for a hub id, in terms of train.init_from."""
    from tinygpt.model.hf import PretrainedUnavailable  # transformers: loaded already when a hub id failed

    if not isinstance(err, PretrainedUnavailable):
        return str(err)
    if Path(name).expanduser().exists():  # a Hugging Face directory that transformers could not read
        return err.reason
    return (f"not a directory, and as a Hugging Face hub id it is unavailable ({err.reason}); give a model folder "
            "(ours, e.g. a copy of models/pretrain, or a Hugging Face GPT-2 one such as models/hf), or fetch the "
            f"model on a machine with network (`hf download {name} config.json model.safetensors --local-dir DIR`), "
            "copy DIR here and set train.init_from to DIR; or set train.init_from: scratch")


def check_shape(name: str, source: GPTConfig, config: GPTConfig) -> None:
    """InitFromError naming both values of every shape key in which the source and the model section differ."""
    keys = [f.name for f in dataclasses.fields(GPTConfig) if f.name not in SHAPE_FREE]
    differing = [key for key in keys if getattr(source, key) != getattr(config, key)]
    if differing:
        raise InitFromError(f"train.init_from {name} has {shape_values(source, differing)} but params.yaml model has "
                            f"{shape_values(config, differing)}; set the model section to the source's shape")


def shape_values(config: GPTConfig, keys: list[str]) -> str:
    """'n_layer 12, bias true': the keys' values as params.yaml spells them."""
    return ", ".join(f"{key} {str(getattr(config, key)).lower()}" for key in keys)
