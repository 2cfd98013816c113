"""Every section of params.yaml and its dataclass: for the stages that read the whole file (check_params,
report) and `tinygpt params`. A stage that reads a few sections imports their config modules itself."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinygpt.core.compute import ComputeParams
from tinygpt.data.config import DataParams, SplitParams, TokenizeParams
from tinygpt.eval.config import CompareParams, EvalParams
from tinygpt.model.config import GPTConfig
from tinygpt.pipeline.params import PARAMS_FILE, ParamsError, TrackingParams, build_section, load_sections, read_yaml
from tinygpt.rlhf.config import (BestOfNParams, DpoParams, HeldOutParams, PreferencesParams, RewardParams,
                                 RlhfParams)
from tinygpt.rlhf.sft_config import SftParams
from tinygpt.train.config import TrainParams

# Section name in params.yaml -> its dataclass, in the file's order.
SECTIONS: dict[str, type] = {
    "tracking": TrackingParams,
    "compute": ComputeParams,
    "data": DataParams,
    "tokenize": TokenizeParams,
    "split": SplitParams,
    "model": GPTConfig,
    "train": TrainParams,
    "eval": EvalParams,
    "compare": CompareParams,
    "sft": SftParams,
    "preferences": PreferencesParams,
    "reward": RewardParams,
    "heldout": HeldOutParams,
    "best_of_n": BestOfNParams,
    "rlhf": RlhfParams,
    "dpo": DpoParams,
}


def check_known(raw: dict[str, Any]) -> None:
    for name in raw:
        if name not in SECTIONS:
            raise ParamsError(f"params.yaml: unknown section '{name}'; known sections: {', '.join(SECTIONS)}")


def load_all(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Every section of params.yaml, validated; unknown sections are errors."""
    raw = read_yaml(path)
    check_known(raw)
    return {name: build_section(name, cls, raw.get(name)) for name, cls in SECTIONS.items()}


def load_named(*names: str, path: str | Path = PARAMS_FILE):
    """The named sections, validated (for benchmarks and tests; a stage names its classes itself, so that
    it imports, and DVC hashes, only their config modules)."""
    return load_sections(path, **{name: SECTIONS[name] for name in names})
