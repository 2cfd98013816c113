"""A model directory of any kind we write, as our GPT: ours (weights.py), a Hugging Face GPT-2 export,
or a reward model, recognised so that it can be described but refused where text is to be generated;
and a language model named by a directory or a Hugging Face hub id (`load_named`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from tinygpt.model import weights
from tinygpt.model.gpt import GPT
from tinygpt.model.weights import CONFIG_FILE, HEAD_FILE, REBUILD, WEIGHTS_FILE, ModelFileError


def model_format(model_dir: Path) -> str:
    """'tinygpt', 'huggingface' (config.json says model_type gpt2) or 'reward' (a head beside the trunk)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        what = "is not a directory" if model_dir.exists() else "does not exist"
        raise ModelFileError(f"{model_dir}: {what}; give a model directory holding {CONFIG_FILE} and "
                             f"{WEIGHTS_FILE} (e.g. models/pretrain), or {REBUILD}")
    model_type = weights.read_config_json(model_dir).get("model_type")
    if (model_dir / HEAD_FILE).exists():
        return "reward"
    if model_type == "gpt2":
        return "huggingface"
    if model_type is not None:
        raise ModelFileError(f"{model_dir / CONFIG_FILE}: model_type {model_type!r} is not supported; "
                             "only our own directories and Hugging Face GPT-2 ('gpt2') are")
    return "tinygpt"


def load_language_model(model_dir: Path, device: str | torch.device = "cpu") -> GPT:
    """The GPT in `model_dir` (our format or Hugging Face GPT-2), in eval mode; a reward model is an error."""
    kind = model_format(model_dir)
    if kind == "reward":
        raise ModelFileError(f"{model_dir}: a reward model ({HEAD_FILE} beside the trunk) scores text, it does not "
                             "continue it; give a language model such as models/pretrain, models/rlhf or models/dpo")
    return load_trunk(model_dir, kind, device)


def load_trunk(model_dir: Path, kind: str, device: str | torch.device = "cpu") -> GPT:
    """The GPT of a directory of format `kind` (a reward model's: its trunk), in eval mode."""
    if kind == "huggingface":
        return load_hf_dir(Path(model_dir)).to(device)
    return weights.load_model(model_dir, device)


def load_hf_dir(model_dir: Path) -> GPT:
    """A Hugging Face GPT-2 directory converted to our GPT, never touching the network."""
    from tinygpt.model import hf  # imports transformers (seconds): only this format needs it

    try:
        return hf.gpt_from_hf(hf.load_pretrained(str(model_dir), allow_download=False))
    except SafetensorError as err:  # transformers lets safetensors' own error through
        raise weights.corrupt_weights(model_dir / WEIGHTS_FILE, err) from err


@dataclass
class NamedModel:
    """A language model loaded by name, with what it was read from."""

    model: GPT  # in eval mode, on the CPU
    format: str  # 'tinygpt' or 'huggingface'
    weights_files: list[Path]  # the safetensors file (or shards) holding its weights


def load_named(name: str) -> NamedModel:
    """The language model `name` names: an existing path (or one spelt as a path) is a model directory, ours
    or a Hugging Face GPT-2 one; anything else a hub id, looked up in the Hugging Face cache first and
    downloaded only when the Hub answers (`hf.load_pretrained`: PretrainedUnavailable otherwise)."""
    path = Path(name).expanduser()
    if path.exists():
        return NamedModel(load_language_model(path), model_format(path), safetensors_files(path))
    from tinygpt.model import hf  # imports transformers (seconds): only a hub id or an HF directory needs it

    if hf.looks_like_path(name):
        model_format(path)  # raises: the directory does not exist
    model = hf.gpt_from_hf(hf.load_pretrained(name, allow_download=True))
    return NamedModel(model, "huggingface", safetensors_files(hub_snapshot(name)))


def hub_snapshot(repo_id: str) -> Path:
    """The Hugging Face cache's folder of the revision of `repo_id` that from_pretrained loaded (main)."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, CONFIG_FILE)
    if not isinstance(config, str):  # None or the "known to be missing" marker
        raise ModelFileError(f"{repo_id}: loaded, but its {CONFIG_FILE} is not in the Hugging Face cache; "
                             "the cache changed meanwhile, load it again")
    return Path(config).parent


def safetensors_files(model_dir: Path) -> list[Path]:
    """model.safetensors, or the shards of a checkpoint saved in several files."""
    single = Path(model_dir) / WEIGHTS_FILE
    return [single] if single.exists() else sorted(Path(model_dir).glob("model-*.safetensors"))
