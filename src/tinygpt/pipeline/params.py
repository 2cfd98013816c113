"""params.yaml, loaded into validated dataclasses: one section each, defined beside the code it configures
(data/config.py, model/config.py, train/config.py, eval/config.py, rlhf/config.py); tracking's is here.

A stage names the dataclasses of the sections it reads (`load_sections(train=TrainParams, ...)`), so it
imports, and DVC hashes, only those config modules; dvc.yaml declares exactly the keys they hold, so DVC
reruns a stage when, and only when, one of them changes. This module imports no config module: the table of
every section (for check_params, the report and `tinygpt params`) is `tinygpt.pipeline.sections`.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tinygpt.core.checks import require
from tinygpt.core.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


@dataclass
class TrackingParams:
    """params.yaml `tracking`: which MLflow experiment every stage logs its run to, and whether a stage may
    run untracked when the store cannot be reached."""

    experiment: str = "tinygpt"
    required: bool = True

    def validate(self) -> None:
        require(bool(self.experiment.strip()), "tracking.experiment", "a non-empty name", self.experiment)


# ---------------------------------------------------------------- loading


class YamlLoader(yaml.SafeLoader):
    """YAML 1.2's numbers: PyYAML follows YAML 1.1, where a float needs a dot, so it reads `2e-05` (as
    `dvc exp run -S dpo.learning_rate=2e-5` writes it, and as DVC itself reads it: a number) as a string."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))


def safe_load_12(text: str) -> Any:
    """yaml.safe_load with YAML 1.2's numbers (YamlLoader is a SafeLoader: plain data only)."""
    loader = YamlLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found; run from the repository root (where params.yaml lives)")
    try:
        raw = safe_load_12(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return raw


def build_section(name: str, cls: type, values: Any) -> Any:
    """Turn one mapping from params.yaml into its validated dataclass `cls`."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ParamsError(f"params.yaml: section '{name}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ParamsError(
                f"params.yaml: unknown key '{name}.{key}'; keys of '{name}': {', '.join(known)}"
            )
    kwargs = {key: coerce(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    section = cls(**kwargs)
    section.validate()
    return section


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {key} must be a list, got {type(value).__name__} {value!r}")
        return [coerce(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: {key} must be a mapping, got {value!r}")
        return {k: coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"params.yaml: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"params.yaml: {key} must be finite, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"params.yaml: {key} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"params.yaml: {key} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"params.yaml: {key} must be a string, got {value!r}")
        return value
    return value


def load_sections(path: str | Path = PARAMS_FILE, **sections: type) -> types.SimpleNamespace:
    """Load and validate the named sections only, e.g. `load_sections(train=TrainParams)` -> `.train`."""
    raw = read_yaml(path)
    return types.SimpleNamespace(**{name: build_section(name, cls, raw.get(name)) for name, cls in sections.items()})


def as_dict(section: Any) -> dict[str, Any]:
    return dataclasses.asdict(section)


def flatten(sections: dict[str, Any] | types.SimpleNamespace) -> dict[str, Any]:
    """{'train.learning_rate': 0.001, ...}: the dotted keys DVC and MLflow use."""
    items = vars(sections) if isinstance(sections, types.SimpleNamespace) else sections
    flat: dict[str, Any] = {}
    for name, section in items.items():
        for key, value in as_dict(section).items():
            flat[f"{name}.{key}"] = value
    return flat


# Keys that decide how a stage reports, not what it computes: no DVC dependency, so switching tracking off
# (or on) reruns nothing. A stage run untracked keeps "mlflow_run_id": null in its metrics.
NOT_DVC_DEPS = ("tracking.required",)


def dvc_keys(name: str, cls: type) -> list[str]:
    """The dotted keys of one section, as dvc.yaml must list them (checked by a test)."""
    keys = [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return [key for key in keys if key not in NOT_DVC_DEPS]
