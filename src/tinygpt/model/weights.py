"""Saving and loading GPT weights: safetensors plus the config as JSON, written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinygpt.core import io
from tinygpt.core.errors import TinyGptError
from tinygpt.model.config import ConfigError, GPTConfig
from tinygpt.model.gpt import GPT, TIED_HEAD
from tinygpt.model.vocabulary import CompactVocabulary

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.safetensors"  # GPT.vocabulary: each id's embedding row, when ids share rows
HEAD_FILE = "head.safetensors"  # a reward model's head beside its trunk (tinygpt.rlhf.reward_model)
REBUILD = ("rerun the stage that writes the directory (`dvc repro pretrain` for models/pretrain, likewise rlhf, "
           "dpo and reward; `dvc repro compare` for models/hf)")


class ModelFileError(TinyGptError, ValueError):
    """A model directory's file is unreadable or disagrees with the others; the message names it."""


def save_model(model: GPT, out_dir: Path) -> None:
    """`out_dir`/model.safetensors and config.json, and vocabulary.safetensors while the model's map of
    shared embedding rows still holds. The tied LM head is stored once (as wte)."""
    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_HEAD}
    with io.atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    vocab = model.vocabulary
    if vocab is not None and vocab.holds_for(model.lm_head.weight):
        with io.atomic_path(out_dir / VOCABULARY_FILE) as tmp:
            save_file({"row_of_id": vocab.row_of_id.to(torch.int32).cpu()}, str(tmp), metadata={"format": "pt"})
    else:
        (out_dir / VOCABULARY_FILE).unlink(missing_ok=True)  # a trained embedding no longer shares rows
    io.write_json(out_dir / CONFIG_FILE, model.config.to_dict())


def read_config_json(model_dir: Path) -> dict:
    """The parsed config.json of `model_dir` (ours or a Hugging Face one)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE}: "
                                f"{REBUILD}")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: not valid JSON ({err}); {REBUILD}") from err
    if not isinstance(values, dict):
        raise ModelFileError(f"{path}: holds a {type(values).__name__}, not a JSON object; {REBUILD}")
    return values


def load_config(model_dir: Path) -> GPTConfig:
    try:
        return GPTConfig.from_dict(read_config_json(model_dir))
    except ConfigError as err:
        raise ModelFileError(f"{Path(model_dir) / CONFIG_FILE}: {err}; {REBUILD}") from err


def corrupt_weights(path: Path, err: Exception) -> ModelFileError:
    return ModelFileError(f"{path}: not a readable safetensors file ({err}); it is truncated or corrupt: {REBUILD}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a truncated or corrupt file is a ModelFileError naming it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: not found; {REBUILD}")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise corrupt_weights(path, err) from err


def check_state(state: dict[str, torch.Tensor], model: GPT, path: Path) -> None:
    """ModelFileError unless `state` has exactly the model's tensors (the tied head aside), shape for shape."""
    expected = {k: v.shape for k, v in model.state_dict().items() if k != TIED_HEAD}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [f"{k} {tuple(state[k].shape)} (config.json: {tuple(expected[k])})"
                for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k]]
    if missing or unexpected or reshaped:
        found = {"missing": missing[:3], "unexpected": unexpected[:3], "shape": reshaped[:3]}
        details = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in found.items() if names)
        raise ModelFileError(f"{path}: weights do not match {CONFIG_FILE} ({details}); the two files come from "
                             f"different models: {REBUILD}")


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> GPT:
    """A GPT with the weights in `model_dir` (and its map of shared rows, if saved), in eval mode."""
    model = GPT(load_config(model_dir))
    path = Path(model_dir) / WEIGHTS_FILE
    state = read_weights(path)
    check_state(state, model, path)
    model.load_state_dict(state, strict=False)  # lm_head.weight is wte's tensor already
    model.vocabulary = load_vocabulary(Path(model_dir) / VOCABULARY_FILE, model)
    return model.to(device).eval()


def load_vocabulary(path: Path, model: GPT) -> CompactVocabulary | None:
    """The saved map of shared embedding rows, checked against the weights; None when there is none."""
    if not path.exists():
        return None
    row_of_id = read_weights(path).get("row_of_id")
    vocab_size = model.config.vocab_size
    usable = row_of_id is not None and row_of_id.shape == (vocab_size,) and not row_of_id.is_floating_point()
    if not usable or row_of_id.min() < 0 or torch.bincount(row_of_id.long()).min() == 0:
        raise ModelFileError(f"{path}: expected one tensor row_of_id of {vocab_size} ids (config.json's vocab_size), "
                             f"their rows numbered from 0 with none unused; {REBUILD}")
    vocab = CompactVocabulary(row_of_id.long())
    if not vocab.holds_for(model.lm_head.weight):
        raise ModelFileError(f"{path}: ids it puts in one row have different embeddings in {WEIGHTS_FILE}; "
                             f"the two files come from different models: {REBUILD}")
    return vocab
