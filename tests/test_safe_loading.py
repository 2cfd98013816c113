"""Safe loading, stated and tested: weights load from safetensors only, torch.load only with
weights_only=True, nothing is unpickled or evaluated, YAML only through yaml.safe_load, and the
corpus pin cannot be emptied.

The first half scans our code's syntax tree for the calls that would break a promise; the second
feeds a live pickle bomb (it creates a marker file when unpickled) to every loader of model files."""
from __future__ import annotations

import ast
import json
import pickle
import shutil

import pytest
import torch
from safetensors import SafetensorError
from support import REPO_ROOT, model_dirs_of, tiny_gpt

from tinygpt.core.errors import ParamsError, TinyGptError
from tinygpt.model import hf, weights
from tinygpt.model.loading import load_hf_dir, load_language_model
from tinygpt.pipeline.sections import load_named
from tinygpt.train.checkpoint import CheckpointDir

pytestmark = pytest.mark.usefixtures("single_thread")

SCANNED_FOLDERS = ("src", "stages", "benchmarks")
BUILTINS_THAT_RUN_CODE = {"eval", "exec", "compile", "__import__"}
UNPICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
UNSAFE_CALLS = {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load",
                "yaml.full_load_all", "pandas.read_pickle"}


# ---------------------------------------------------------------- the scanner


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> full dotted name for every import, so `np.load` and `from numpy import load` both
    resolve to numpy.load."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def dotted_name(func: ast.expr, aliases: dict[str, str]) -> str | None:
    """'torch.load' for `torch.load(...)`, 'numpy.load' for `np.load(...)`; None for a computed callee."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    return ".".join([aliases.get(func.id, func.id), *reversed(parts)])


def keyword(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def is_literal(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def call_problem(call: ast.Call, name: str | None) -> str | None:
    """What is unsafe about one call (`name` is its callee's dotted name), or None."""
    if name is None:
        return None
    builtin = name.removeprefix("builtins.")  # eval(...), builtins.eval(...), an alias of either
    if builtin in BUILTINS_THAT_RUN_CODE:
        return f"{builtin}() runs code built from data"
    hidden = any(k.arg is None for k in call.keywords)  # **kwargs could carry any argument
    if name == "torch.load":
        given = keyword(call, "weights_only")
        if hidden or given is None or not is_literal(given.value, True):
            return "torch.load without a literal weights_only=True unpickles arbitrary objects"
    if name == "numpy.load":
        given = keyword(call, "allow_pickle")
        if hidden or len(call.args) >= 3 or (given is not None and not is_literal(given.value, False)):
            return "numpy.load may allow_pickle"
    if name in UNSAFE_CALLS:
        return f"{name} can build arbitrary objects; use yaml.safe_load (or safetensors for tensors)"
    return None


def import_problems(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        modules = [node.module or ""]
    else:
        return []
    return [f"imports {m}, which unpickles" for m in modules if m.split(".")[0] in UNPICKLING_MODULES]


def scan(source: str, filename: str) -> tuple[list[str], int]:
    """('file:line: problem' for each unsafe construct, number of torch.load calls seen)."""
    tree = ast.parse(source, filename)
    aliases = import_aliases(tree)
    problems, torch_loads = [], 0
    for node in ast.walk(tree):
        found = import_problems(node)
        if isinstance(node, ast.Call):
            name = dotted_name(node.func, aliases)
            torch_loads += name == "torch.load"
            found += [p for p in [call_problem(node, name)] if p]
        problems += [f"{filename}:{node.lineno}: {p}" for p in found]
    return sorted(problems), torch_loads


def test_the_scanner_flags_every_unsafe_pattern():
    bad = "\n".join([
        "import torch, pickle",                      # 1
        "import numpy as np",                        # 2
        "import yaml",                               # 3
        "eval(x)",                                   # 4
        "exec(code)",                                # 5
        "compile(text, 'f', 'exec')",                # 6
        "__import__('os')",                          # 7
        "torch.load(f)",                             # 8
        "torch.load(f, weights_only=False)",         # 9
        "torch.load(f, **options)",                  # 10
        "np.load(p, allow_pickle=True)",             # 11
        "yaml.load(text)",                           # 12
        "from yaml import unsafe_load as u; u(text)",  # 13
        "from dill import loads",                    # 14
        "import builtins; builtins.exec(code)",      # 15
    ])
    problems, _ = scan(bad, "bad.py")
    flagged = {int(p.split(":")[1]) for p in problems}
    assert flagged == set(range(1, 16)) - {2, 3}, problems
    assert "bad.py:4: eval() runs code built from data" in problems


def test_the_scanner_lets_the_safe_lookalikes_through():
    good = "\n".join([
        "import torch, yaml", "import numpy as np",
        "model = torch.compile(model)", "model.compile()", "model.eval()", "evaluate(model)",
        "torch.load(f, map_location='cpu', weights_only=True)", "np.load(p, mmap_mode='r')",
        "np.load(p, allow_pickle=False)", "yaml.safe_load(text)",
    ])
    assert scan(good, "good.py") == ([], 1)


def test_our_code_never_evaluates_unpickles_or_loads_unsafely():
    files = sorted(p for folder in SCANNED_FOLDERS for p in (REPO_ROOT / folder).rglob("*.py"))
    assert REPO_ROOT / "src/tinygpt/train/checkpoint.py" in files and len(files) > 50  # the scan sees the code
    problems, torch_loads = [], 0
    for path in files:
        found, loads = scan(path.read_text(encoding="utf-8"), str(path.relative_to(REPO_ROOT)))
        problems += found
        torch_loads += loads
    assert problems == [], "unsafe loading or evaluation:\n" + "\n".join(problems)
    assert torch_loads >= 1  # the checkpoint loader's torch.load was checked, not missed


# ---------------------------------------------------------------- the pickle bomb


class Bomb:
    """Unpickled, it calls open(marker, "w"): the file appearing proves code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_bomb(path, marker, kind: str) -> None:
    """A raw pickle, or torch.save's zip (the format of pytorch_model.bin and of our checkpoints)."""
    if kind == "pickle":
        path.write_bytes(pickle.dumps(Bomb(marker)))
    else:
        torch.save({"state": Bomb(marker)}, path)


BOMB_KINDS = ["pickle", "torch.save"]


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_the_bomb_is_live(tmp_path, kind):
    """Otherwise 'the marker is absent' below would prove nothing."""
    write_bomb(tmp_path / "bomb", tmp_path / "marker", kind)
    if kind == "pickle":
        pickle.loads((tmp_path / "bomb").read_bytes()).close()
    else:
        torch.load(tmp_path / "bomb", weights_only=False)["state"].close()
    assert (tmp_path / "marker").exists()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return model_dirs_of(tiny_gpt(), tmp_path_factory.mktemp("models"))


def copy_of(model_dirs, kind: str, tmp_path):
    return shutil.copytree(model_dirs / kind, tmp_path / kind)


@pytest.mark.parametrize("kind", BOMB_KINDS)
@pytest.mark.parametrize("load", [weights.load_model, load_language_model], ids=["load_model", "load_language_model"])
def test_a_pickle_posing_as_model_safetensors_is_refused(model_dirs, tmp_path, kind, load):
    model_dir = copy_of(model_dirs, "ours", tmp_path)
    write_bomb(model_dir / weights.WEIGHTS_FILE, tmp_path / "marker", kind)
    with pytest.raises(weights.ModelFileError, match=f"{model_dir / weights.WEIGHTS_FILE}: not a readable safetensors"):
        load(model_dir)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_a_pickle_posing_as_a_reward_head_is_refused(model_dirs, tmp_path, kind):
    from tinygpt.rlhf.reward_model import load_reward_model

    model_dir = copy_of(model_dirs, "ours", tmp_path)
    write_bomb(model_dir / weights.HEAD_FILE, tmp_path / "marker", kind)
    with pytest.raises((weights.ModelFileError, SafetensorError)):
        load_reward_model(model_dir)
    assert not (tmp_path / "marker").exists()


def hf_dir_with_pickle_weights(model_dirs, tmp_path, name: str, bomb_kind: str | None):
    """The export with model.safetensors replaced by `name`: a bomb, or (None) the same weights pickled by
    torch.save, which transformers' own loader would accept."""
    model_dir = copy_of(model_dirs, "hf", tmp_path)
    (model_dir / weights.WEIGHTS_FILE).unlink()
    if bomb_kind:
        write_bomb(model_dir / name, tmp_path / "marker", bomb_kind)
    else:
        torch.save(hf.hf_from_gpt(tiny_gpt()).state_dict(), model_dir / name)
    return model_dir


@pytest.mark.parametrize("bomb_kind", [*BOMB_KINDS, None], ids=[*BOMB_KINDS, "genuine-weights"])
@pytest.mark.parametrize("load", [load_hf_dir, load_language_model], ids=["load_hf_dir", "load_language_model"])
def test_a_hugging_face_dir_with_only_pytorch_model_bin_is_refused(model_dirs, tmp_path, bomb_kind, load):
    model_dir = hf_dir_with_pickle_weights(model_dirs, tmp_path, "pytorch_model.bin", bomb_kind)
    with pytest.raises(TinyGptError) as caught:
        load(model_dir)
    message = str(caught.value)
    assert f"directory {model_dir} has no model.safetensors (it holds pytorch_model.bin)" in message
    assert "only safetensors weights (model.safetensors) are accepted" in message
    assert "safe_serialization=True" in message  # how to convert it
    assert not (tmp_path / "marker").exists()


def test_a_hub_repo_with_only_pytorch_model_bin_is_refused(tmp_path, monkeypatch):
    """A hub id whose cached snapshot has genuine weights, but pickled: transformers alone would load them."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--tinygpt-tests--pickle-only"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    hf_model = hf.hf_from_gpt(tiny_gpt())
    hf_model.config.save_pretrained(str(snapshot))
    torch.save(hf_model.state_dict(), snapshot / "pytorch_model.bin")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # transformers reads HF_HUB_OFFLINE at import; without this it would ask the Hub's conversion bot
    # (the network) for a safetensors copy, even with local_files_only=True.
    monkeypatch.setenv("DISABLE_SAFETENSORS_CONVERSION", "1")
    with pytest.raises(hf.PretrainedUnavailable) as caught:
        hf.load_pretrained("tinygpt-tests/pickle-only", allow_download=False)
    assert "no model.safetensors for tinygpt-tests/pickle-only" in caught.value.reason
    assert "only safetensors weights (model.safetensors) are accepted" in caught.value.reason
    assert "do not set `use_safetensors=True`" not in str(caught.value)  # transformers' advice is not passed on


def test_a_config_naming_a_pickle_weights_file_is_refused(model_dirs, tmp_path):
    """transformers loads config.json's `transformers_weights` file even with use_safetensors=True."""
    model_dir = hf_dir_with_pickle_weights(model_dirs, tmp_path, "adapter_model.bin", None)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    (model_dir / weights.WEIGHTS_FILE).write_bytes((model_dirs / "hf" / weights.WEIGHTS_FILE).read_bytes())
    with pytest.raises(hf.PretrainedUnavailable, match="names the weights file 'adapter_model.bin', not a safetensors"):
        load_hf_dir(model_dir)


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_a_pickle_bomb_as_the_training_checkpoint_is_refused(tmp_path, kind):
    checkpoint = CheckpointDir(tmp_path / "cache", {"model": "tiny"})
    checkpoint.path.mkdir(parents=True)
    write_bomb(checkpoint.file, tmp_path / "marker", kind)
    with pytest.raises(TinyGptError) as caught:
        checkpoint.load()
    message = str(caught.value)
    assert message.startswith(f"{checkpoint.file}: not a valid training checkpoint (UnpicklingError: ")
    assert message.endswith(f"delete {checkpoint.path} to restart training from step 0")
    assert "\n" not in message and "False" not in message  # one line, and no advice to load it unsafely
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------- the corpus pin


@pytest.mark.parametrize("value", ['""', "null"])
def test_the_corpus_sha256_pin_cannot_be_emptied(tmp_path, value):
    (tmp_path / "params.yaml").write_text(f"data:\n  sha256: {value}\n")
    with pytest.raises(ParamsError, match=r"data\.sha256"):
        load_named("data", path=tmp_path / "params.yaml")
