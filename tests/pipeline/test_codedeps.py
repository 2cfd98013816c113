"""Code deps: dvc.yaml lists, for every stage, exactly the project modules its script imports
(transitively, less the documented plumbing), and the closure is computed from the source."""
from pathlib import Path

import pytest
import yaml

from tinygpt.pipeline import codedeps


def dvc_stages(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]


def is_code(dep: str) -> bool:
    return dep.endswith(".py") or dep.startswith(("src/", "stages/"))


def test_every_stage_lists_exactly_the_modules_its_script_imports(repo_root):
    problems = []
    for name, stage in dvc_stages(repo_root).items():
        assert stage["cmd"] == f"python -m stages.{name}", f"stage {name}: script and stage name differ"
        declared = {dep for dep in stage["deps"] if is_code(dep)}
        imported = set(codedeps.stage_files(name, repo_root))
        problems += [f"stage {name}: dvc.yaml misses {f} (imported by stages/{name}.py)" for f in sorted(imported - declared)]
        problems += [f"stage {name}: dvc.yaml lists {f}, which stages/{name}.py no longer imports"
                     for f in sorted(declared - imported)]
    assert not problems, "\n".join(problems)


def test_pretrain_closure_reaches_the_modules_the_issue_found_missing(repo_root):
    """The figure helpers the stages draw with were once missing from their deps."""
    for stage in ("pretrain", "reward", "rlhf"):
        assert "src/tinygpt/core/figures.py" in codedeps.stage_files(stage, repo_root)
        assert "src/tinygpt/pipeline/outputs/curves.py" in codedeps.stage_files(stage, repo_root)


def test_exempt_plumbing_is_not_a_dep(repo_root):
    files = codedeps.stage_files("pretrain", repo_root)
    assert "src/tinygpt/pipeline/tracking.py" not in files and "src/tinygpt/pipeline/cli.py" not in files
    assert "src/tinygpt/pipeline/registry.py" not in files  # (model/hf.py is a dep: train.init_from loads GPT-2)
    assert "src/tinygpt/__init__.py" not in files  # a docstring and the version string only


def test_the_stages_package_decides_which_src_runs_so_it_is_a_dep(repo_root):
    assert "stages/__init__.py" in codedeps.stage_files("split", repo_root)


def test_the_checkpoint_key_hashes_the_training_code_only():
    trained_by = codedeps.modules("tinygpt.train.loop")
    assert "tinygpt.model.gpt" in trained_by and "tinygpt.train.optim" in trained_by
    assert not [m for m in trained_by if m.startswith(("tinygpt.eval", "tinygpt.pipeline", "tinygpt.rlhf"))]


@pytest.mark.parametrize("source, module, is_package, expected", [
    ("import tinygpt.model.gpt", "stages.x", False, {"tinygpt.model.gpt"}),
    ("from tinygpt.core import io, errors", "stages.x", False,
     {"tinygpt.core", "tinygpt.core.io", "tinygpt.core.errors"}),
    ("from .gpt import GPT", "tinygpt.model.hf", False, {"tinygpt.model.gpt", "tinygpt.model.gpt.GPT"}),
    ("from . import io", "tinygpt.core.checks", False, {"tinygpt.core", "tinygpt.core.io"}),
    ("from ..core import io", "tinygpt.eval.calibration", False, {"tinygpt.core", "tinygpt.core.io"}),
    ("from .io import x", "tinygpt.core", True, {"tinygpt.core.io", "tinygpt.core.io.x"}),
    ("def f():\n    import tinygpt.model.hf\n", "tinygpt.eval.compare", False, {"tinygpt.model.hf"}),
])
def test_imported_names_reads_absolute_relative_and_function_level_imports(source, module, is_package, expected):
    assert codedeps.imported_names(source, module, is_package) == expected


def test_module_file_finds_modules_not_names(repo_root):
    assert codedeps.module_file("tinygpt.model.gpt") == repo_root / "src/tinygpt/model/gpt.py"
    assert codedeps.module_file("tinygpt.model.gpt.GPT") is None  # a class, not a module
    assert codedeps.module_file("stages.pretrain") == repo_root / "stages/pretrain.py"
    assert codedeps.module_file("numpy") is None or not codedeps.is_project("numpy")


def test_closure_follows_imports_transitively_and_skips_third_party(repo_root):
    modules = codedeps.closure("stages.evaluate")
    # stages.evaluate imports tinygpt.eval.evaluate, which imports tinygpt.eval.likelihood: reached indirectly.
    assert "tinygpt.eval.likelihood" in modules and "tinygpt.eval.evaluate" in modules
    assert all(codedeps.is_project(name) for name in modules)


def test_code_digest_changes_with_any_module_the_entry_imports(tmp_path, monkeypatch):
    """A throwaway project package: editing a module two imports away changes the digest."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/__init__.py").write_text('"""stages"""\n')
    (tmp_path / "stages/demo.py").write_text("from tinygpt import first\n")
    package = tmp_path / "tinygpt"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from tinygpt import second\n")
    (package / "second.py").write_text("VALUE = 1\n")
    (package / "unrelated.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(__import__("sys").modules) if m.split(".")[0] in ("tinygpt", "stages")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    assert codedeps.stage_files("demo", tmp_path) == ["stages/demo.py", "tinygpt/first.py", "tinygpt/second.py"]
    before = codedeps.code_digest("stages.demo")
    (package / "unrelated.py").write_text("VALUE = 2\n")
    assert codedeps.code_digest("stages.demo") == before
    (package / "second.py").write_text("VALUE = 2\n")
    assert codedeps.code_digest("stages.demo") != before
