"""The package's layers and who may import whom (the rules docs/extending.md states).

Imports flow down: stages -> pipeline -> rlhf -> eval / train -> model -> data -> core. Every import in
every module is read with `ast` (inside functions too), so a violation fails here naming the file, the
line and the rule, before a reader has to find it.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# layer -> the layers of ours it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "model": {"core", "data"},
    "train": {"core", "data", "model"},
    "eval": {"core", "data", "model"},
    "rlhf": {"core", "data", "model", "eval"},
    "pipeline": {"core", "data", "model", "train", "eval", "rlhf", ""},  # "": the package marker's version
}
# Output paths, MLflow and writing the stages' files belong to pipeline/ and stages/ only.
PIPELINE_ONLY_THIRD_PARTY = {"mlflow", "dvc"}
# Loading params.yaml must stay torch-free: `tinygpt params` and the check_params stage run in seconds.
TORCH_FREE = ["tinygpt.pipeline.params", "tinygpt.pipeline.sections", "tinygpt.core.checks", "tinygpt.core.compute",
              "tinygpt.core.errors", "tinygpt.data.config", "tinygpt.model.config", "tinygpt.train.config",
              "tinygpt.eval.config", "tinygpt.rlhf.config", "tinygpt.rlhf.sft_config"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, source text) for every import in the file, relative ones resolved."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ast.get_source_segment(source, node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] if node.module else [f"{base}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name, ast.get_source_segment(source, node)) for name in names]
    return found


def layer_of(module: str) -> str | None:
    """'train' for tinygpt.train.loop, '' for the package marker, None for a third-party module."""
    parts = module.split(".")
    if parts[0] != "tinygpt":
        return None
    return parts[1] if len(parts) > 1 else ""


def library_files() -> list[Path]:
    return sorted(p for p in (SRC / "tinygpt").rglob("*.py") if p.parent != SRC / "tinygpt")


def violations(path: Path) -> list[str]:
    layer = layer_of(module_name(path))
    where = path.relative_to(SRC.parent)
    found = []
    for line, target, text in imports(path):
        target_layer = layer_of(target)
        if target_layer is None:
            if layer != "pipeline" and target.split(".")[0] in PIPELINE_ONLY_THIRD_PARTY:
                found.append(f"{where}:{line}: `{text}`: only tinygpt.pipeline may use {target.split('.')[0]}")
        elif target_layer != layer and target_layer not in ALLOWED[layer]:
            allowed = ", ".join(sorted(ALLOWED[layer])) or "nothing of ours"
            found.append(f"{where}:{line}: `{text}`: {layer} may import {allowed}, not {target_layer or 'tinygpt'}")
    return found


def test_every_library_module_belongs_to_a_layer():
    strays = [str(p.relative_to(SRC)) for p in library_files() if layer_of(module_name(p)) not in ALLOWED]
    assert not strays, f"modules outside the layers {sorted(ALLOWED)}: {strays}"
    top_level = sorted(p.name for p in (SRC / "tinygpt").glob("*.py"))
    assert top_level == ["__init__.py"], f"modules belong in a layer's folder, not at the top: {top_level}"


def test_imports_flow_down_the_layers():
    found = [v for path in library_files() for v in violations(path)]
    assert not found, "\n".join(found)


def test_the_check_catches_an_import_against_the_rules(tmp_path, monkeypatch):
    """The walker itself: a train module importing eval, and a data module importing mlflow, are caught."""
    fake = tmp_path / "src"
    (fake / "tinygpt/train").mkdir(parents=True)
    (fake / "tinygpt/data").mkdir(parents=True)
    (fake / "tinygpt/train/loop.py").write_text("import torch\n\ndef f():\n    from ..eval import likelihood\n")
    (fake / "tinygpt/data/tokens.py").write_text("from tinygpt.core import io\nimport mlflow\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert violations(fake / "tinygpt/train/loop.py") == [
        "src/tinygpt/train/loop.py:4: `from ..eval import likelihood`: train may import core, data, model, not eval"]
    assert violations(fake / "tinygpt/data/tokens.py") == [
        "src/tinygpt/data/tokens.py:2: `import mlflow`: only tinygpt.pipeline may use mlflow"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_loading_params_never_imports_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:1])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing {module} imports torch"


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at the top or inside functions), from the source."""
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, imported, _ in imports(path):
            # `from a.b import c`: c may be a module of ours or a name defined in a.b
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "tinygpt":
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circle():
    """No module reaches itself through its imports, lazy ones included: each can be read bottom up."""
    graph = import_graph()
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join(trail[trail.index(target):] + [module, target]) if target in trail
                               else f"{module} -> {target}")
            elif target not in state:
                visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not circles, "import circles:\n" + "\n".join(circles)
