"""Saving and loading GPT weights: safetensors plus the config as JSON, written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinygpt.core import io
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model(model: GPT, out_dir: Path) -> None:
    """`out_dir`/model.safetensors and config.json. The tied LM head is stored once (as wte)."""
    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    with io.atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    io.write_json(out_dir / CONFIG_FILE, model.config.to_dict())


def load_config(model_dir: Path) -> GPTConfig:
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro pretrain` to produce the model")
    return GPTConfig.from_dict(json.loads(path.read_text()))


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> GPT:
    """A GPT with the weights in `model_dir`, in eval mode."""
    model = GPT(load_config(model_dir))
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro pretrain` to produce the model")
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"{path}: weights do not match config.json (missing {missing}, unexpected {unexpected})")
    return model.to(device).eval()
