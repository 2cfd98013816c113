import ast
import dataclasses
from pathlib import Path

import pytest
import yaml
from support import declared_paths

from tinygpt.model.config import GPTConfig, preset
from tinygpt.pipeline import params, paths
from tinygpt.pipeline.params import ParamsError, dvc_keys
from tinygpt.pipeline.sections import SECTIONS, load_all, load_named


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def section_keys(*names: str) -> list[str]:
    """The dotted keys of these sections, as dvc.yaml lists them."""
    return [key for name in names for key in dvc_keys(name, SECTIONS[name])]


def test_repository_params_are_valid(repo_root):
    sections = load_all(repo_root / "params.yaml")
    assert sections["split"].val_fraction == 0.1
    assert sections["data"].sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_defaults_fill_missing_keys(tmp_path):
    p = load_named("split", "data", path=write(tmp_path, "split: {}\n"))
    assert p.split.val_fraction == 0.1 and p.data.mirrors == ["../shared/corpora/tinyshakespeare.txt"]


@pytest.mark.parametrize("name", list(SECTIONS))
def test_dataclass_defaults_are_the_params_yaml_recipe(repo_root, name):
    """`TrainParams()` (in a test, a benchmark) is the pipeline's recipe: every default is params.yaml's
    value, and params.yaml sets every key (so each key's meaning is written once, there)."""
    raw = params.read_yaml(repo_root / "params.yaml")[name]
    from_yaml = dataclasses.asdict(params.build_section(name, SECTIONS[name], raw))  # unknown keys fail here
    defaults = dataclasses.asdict(SECTIONS[name]())
    assert sorted(raw) == sorted(defaults), f"params.yaml {name}: keys differ from {SECTIONS[name].__name__}'s"
    differing = {f"{name}.{key}": (value, from_yaml[key]) for key, value in defaults.items() if value != from_yaml[key]}
    assert not differing, f"dataclass default differs from params.yaml (default, params.yaml): {differing}"


def test_the_default_preset_is_the_default_config(repo_root):
    assert preset("default") == GPTConfig() == load_all(repo_root / "params.yaml")["model"]


def test_unknown_key_names_key_and_allowed(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'split\.val_frac'.*val_fraction"):
        load_named("split", path=write(tmp_path, "split:\n  val_frac: 0.2\n"))


def test_unknown_section(tmp_path):
    with pytest.raises(ParamsError, match="unknown section 'splitt'"):
        load_all(write(tmp_path, "splitt:\n  val_fraction: 0.2\n"))


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_fraction_outside_open_interval(tmp_path, value):
    with pytest.raises(ParamsError, match=r"split\.val_fraction.*strictly between 0 and 1"):
        load_named("split", path=write(tmp_path, f"split:\n  val_fraction: {value}\n"))


def test_an_exponent_without_a_dot_is_a_number(tmp_path):
    # As `dvc exp run -S dpo.learning_rate=2e-5` writes it; YAML 1.1 would read a string.
    p = load_named("dpo", "split", path=write(tmp_path, "dpo:\n  learning_rate: 2e-05\nsplit:\n  val_fraction: 1E-1\n"))
    assert p.dpo.learning_rate == 2e-05 and p.split.val_fraction == 0.1
    assert params.read_yaml(write(tmp_path, "a: 1e5\nb: 12\nc: 1.5\nd: e5\n")) == {"a": 1e5, "b": 12, "c": 1.5, "d": "e5"}


def test_wrong_types(tmp_path):
    with pytest.raises(ParamsError, match=r"split\.val_fraction must be a number, got 'big'"):
        load_named("split", path=write(tmp_path, "split:\n  val_fraction: big\n"))
    with pytest.raises(ParamsError, match=r"data\.mirrors must be a list"):
        load_named("data", path=write(tmp_path, "data:\n  mirrors: /one/path\n"))
    with pytest.raises(ParamsError, match=r"model\.n_layer must be an integer, got 2\.5"):
        load_named("model", path=write(tmp_path, "model:\n  n_layer: 2.5\n"))
    with pytest.raises(ParamsError, match=r"model\.bias must be true or false"):
        load_named("model", path=write(tmp_path, "model:\n  bias: 1\n"))


def test_impossible_values(tmp_path):
    with pytest.raises(ParamsError, match=r"data\.timeout_s = -1.0 .* > 0"):
        load_named("data", path=write(tmp_path, "data:\n  timeout_s: -1\n"))
    with pytest.raises(ParamsError, match=r"data\.sha256.*64 hexadecimal"):
        load_named("data", path=write(tmp_path, "data:\n  sha256: abc\n"))
    with pytest.raises(ValueError, match=r"model\.n_embd = 100 is not divisible by model\.n_head = 3"):
        load_named("model", path=write(tmp_path, "model:\n  n_embd: 100\n  n_head: 3\n"))
    with pytest.raises(ValueError, match=r"model\.n_layer = -2"):
        load_named("model", path=write(tmp_path, "model:\n  n_layer: -2\n"))
    with pytest.raises(ParamsError, match=r"best_of_n\.deep_n = 32 .* power of two >= best_of_n\.max_n \(64\)"):
        load_named("best_of_n", path=write(tmp_path, "best_of_n:\n  max_n: 64\n  deep_n: 32\n"))


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        params.read_yaml(tmp_path / "absent.yaml")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.read_yaml(write(tmp_path, "split: [unclosed\n"))


def test_flatten_uses_dotted_keys():
    flat = params.flatten({"split": SECTIONS['split'](val_fraction=0.2)})
    assert flat == {"split.val_fraction": 0.2, "split.seed": 1337}


def sections_read_by(stage_script: Path) -> list[str]:
    """The section names a stage passes to params.load_sections(name=Class, ...), each with its own class."""
    tree = ast.parse(stage_script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load_sections":
            if any(kw.arg is None for kw in node.keywords):  # load_sections(**sections.SECTIONS)
                return list(SECTIONS)
            for kw in node.keywords:
                assert kw.value.id == SECTIONS[kw.arg].__name__, f"{stage_script}: {kw.arg}={kw.value.id}"
            return [kw.arg for kw in node.keywords]
    raise AssertionError(f"{stage_script} does not call params.load_sections")


def test_dvc_declares_exactly_the_keys_each_stage_reads(repo_root):
    """DVC must rerun a stage when, and only when, a key it reads changes."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    # check_params reads the whole file (a file dep), not keys: any edit reruns the check alone.
    check = stages.pop("check_params")
    assert "params" not in check and "params.yaml" in check["deps"]
    for name, stage in stages.items():
        script = repo_root / "stages" / f"{name}.py"
        # A bare section name in dvc.yaml tracks the whole group (all its keys).
        declared = sorted(
            key for entry in stage.get("params", [])
            for key in (section_keys(entry) if entry in SECTIONS else [entry])
        )
        expected = sorted(section_keys(*sections_read_by(script)))
        assert declared == expected, f"dvc.yaml stage {name}: params differ from what {script.name} reads"


def test_dvc_outputs_of_data_stages_are_the_library_paths(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert stages["download"]["outs"] == [str(paths.RAW_CORPUS), str(paths.RAW_DOCUMENTS), str(paths.RAW_MANIFEST)]
    assert stages["tokenize"]["outs"] == [str(paths.TOKENS_BIN), str(paths.TOKEN_OFFSETS), str(paths.TOKEN_DOCUMENTS),
                                          str(paths.TOKENS_META)]
    assert stages["split"]["outs"] == [str(paths.TRAIN_BIN), str(paths.VAL_BIN), str(paths.SPLIT_META)]
    for name in ("download", "tokenize", "split"):
        assert declared_paths(stages[name]["metrics"]) == [str(paths.metrics_file(name))]
    assert str(paths.CORPUS_FOLDER) in stages["download"]["deps"]  # local corpora: a changed file reruns download
