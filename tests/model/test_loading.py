"""Model directories of each kind load as the same GPT; broken ones are errors that name the file."""
import json

import pytest
import torch
from support import model_dirs_of, tiny_gpt

from tinygpt.core.errors import TinyGptError
from tinygpt.model.gpt import GPT
from tinygpt.model.loading import load_language_model, model_format

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return model_dirs_of(tiny_gpt(), tmp_path_factory.mktemp("models"))


def logits(model: GPT) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.arange(12)[None] * 97)[0]


def test_our_directory_and_its_hugging_face_export_load_as_the_same_gpt(dirs):
    expected = logits(tiny_gpt())
    assert model_format(dirs / "ours") == "tinygpt" and model_format(dirs / "hf") == "huggingface"
    torch.testing.assert_close(logits(load_language_model(dirs / "ours")), expected, rtol=0, atol=0)
    torch.testing.assert_close(logits(load_language_model(dirs / "hf")), expected, rtol=1e-5, atol=1e-5)


def test_a_reward_model_directory_is_recognised_and_refused(dirs, tmp_path):
    from tinygpt.rlhf.reward_model import RewardModel, save_reward_model

    save_reward_model(RewardModel(tiny_gpt()), tmp_path / "reward")
    assert model_format(tmp_path / "reward") == "reward"
    with pytest.raises(TinyGptError, match=f"{tmp_path / 'reward'}: a reward model"):
        load_language_model(tmp_path / "reward")


def broken_copy(dirs, tmp_path, kind: str):
    """A copy of the `kind` directory to break."""
    copy = tmp_path / kind
    copy.mkdir()
    for path in (dirs / kind).iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


@pytest.mark.parametrize("kind", ["ours", "hf"])
def test_truncated_weights_name_the_file_and_the_fix(dirs, tmp_path, kind):
    broken = broken_copy(dirs, tmp_path, kind)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TinyGptError, match=f"{broken / 'model.safetensors'}: not a readable safetensors file "
                                           r".*truncated or corrupt: rerun .*dvc repro"):
        load_language_model(broken)


@pytest.mark.parametrize("kind", ["ours", "hf"])
def test_a_config_that_is_not_json_names_the_file(dirs, tmp_path, kind):
    broken = broken_copy(dirs, tmp_path, kind)
    (broken / "config.json").write_text('{"n_layer": 1,')
    with pytest.raises(TinyGptError, match=f"{broken / 'config.json'}: not valid JSON"):
        load_language_model(broken)


def test_weights_that_do_not_match_the_config_name_both(dirs, tmp_path):
    broken = broken_copy(dirs, tmp_path, "ours")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "n_embd": 16}))
    first_mismatch = r"transformer.h.0.attn.c_attn.bias \(24,\) \(config.json: \(48,\)\)"
    with pytest.raises(TinyGptError, match=f"{broken / 'model.safetensors'}: weights do not match config.json "
                                           rf"\(shape: {first_mismatch}"):
        load_language_model(broken)
    (broken / "config.json").write_text(json.dumps({**config, "n_layer": 2}))
    with pytest.raises(TinyGptError, match=r"\(missing: transformer.h.1."):
        load_language_model(broken)


def test_missing_directory_and_files_say_what_a_model_directory_holds(dirs, tmp_path):
    with pytest.raises(TinyGptError, match=f"{tmp_path / 'absent'}: does not exist; give a model directory"):
        load_language_model(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TinyGptError, match="is not a directory"):
        load_language_model(tmp_path / "file")
    broken = broken_copy(dirs, tmp_path, "ours")
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"{broken / 'config.json'}: not found"):
        load_language_model(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(TinyGptError, match="model_type 'llama' is not supported"):
        load_language_model(broken)
