"""A MODEL argument as a local directory: a path as it is, or an MLflow model URI downloaded from the store.
Imports mlflow only for a URI, so `tinygpt generate models/pretrain` starts without it."""
from __future__ import annotations

from pathlib import Path

from tinygpt.core.errors import TinyGptError

MLFLOW_SCHEMES = ("models:/", "runs:/")


class NotATinyGptModel(TinyGptError, ValueError):
    """An MLflow model that neither this module nor the transformers flavour logged."""


def model_dir(model: str) -> Path:
    """The local directory of a MODEL argument: a path, or an MLflow URI downloaded by the registry."""
    if model.startswith(MLFLOW_SCHEMES):
        return local_model_dir(model)
    return Path(model).expanduser()


def local_model_dir(uri: str) -> Path:
    """Download a logged or registered model (models:/..., runs:/...) and return its weights directory:
    ours in weights.py format, or the Hugging Face directory of a transformers-flavour model."""
    import mlflow  # seconds to import: only URIs need it
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from tinygpt.pipeline import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as err:  # no such model, version, alias or run
        first = str(err).strip().splitlines()[0]
        raise TinyGptError(f"{uri}: {first} in the MLflow store {tracking.tracking_uri()}; check the name, version "
                           "or alias (the MLflow UI's Models page lists them), or set MLFLOW_TRACKING_URI to the "
                           "store that has it") from err
    flavors = Model.load(str(root)).flavors
    if "transformers" in flavors:
        return root / flavors["transformers"].get("model_binary", "model")
    artifacts = flavors.get("python_function", {}).get("artifacts", {})
    if "model" not in artifacts:
        raise NotATinyGptModel(f"{uri}: not a tinygpt model (its MLmodel has no 'model' artifact); "
                               "log one with tinygpt.pipeline.registry.log_tinygpt_model")
    return root / artifacts["model"]["path"]
