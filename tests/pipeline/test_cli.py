"""The `tinygpt` command: --version, params, generate (streamed, from either model format) and info."""
import io as io_module
import json
import subprocess
import sys

import pytest
import torch
from transformers import GPT2LMHeadModel

import tinygpt
from tinygpt.core import io
from tinygpt.data import tokenizer
from tinygpt.data.tokenizer import N_VOCAB
from tinygpt.model import hf, weights
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.pipeline import cli, paths
from tinygpt.rlhf.reward_model import RewardModel, save_reward_model

pytestmark = pytest.mark.usefixtures("single_thread")


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tinygpt.pipeline.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_version(repo_root):
    out = run_cli("--version", cwd=repo_root)
    assert out.returncode == 0 and out.stdout.strip() == f"tinygpt {tinygpt.__version__}"


def test_params_prints_resolved_sections(repo_root):
    out = run_cli("params", cwd=repo_root)
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert resolved["split"] == {"val_fraction": 0.1, "seed": 1337}
    assert resolved["model"]["vocab_size"] == 50257


def test_bad_params_exit_nonzero_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("split:\n  val_fraction: 2\n")
    out = run_cli("params", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: params.yaml: split.val_fraction = 2.0 is invalid; allowed: a fraction strictly between 0 and 1"
    ]


def test_section_filter(repo_root, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    cli.main(["params", "--section", "split"])
    assert json.loads(capsys.readouterr().out) == {"split": {"val_fraction": 0.1, "seed": 1337}}


# ---------------------------------------------------------------- generate and info

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny GPT-2-vocabulary model saved our way (models/pretrain) and exported for Hugging Face
    (models/hf), under a project folder that has a metrics file for the first."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=N_VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=8)).eval()
    root = tmp_path_factory.mktemp("project")
    weights.save_model(model, root / paths.PRETRAIN_DIR)
    hf.export_hf_dir(model, root / paths.HF_DIR)
    io.write_json(root / paths.metrics_file("pretrain"), {"whole_val": {"loss": 4.5, "perplexity": 90.0017}})
    return root, model


class Recorder:
    """A stdout that keeps every call, to see that text comes out piece by piece and is flushed."""

    def __init__(self):
        self.calls = []

    def write(self, text):
        self.calls.append(("write", text))

    def flush(self):
        self.calls.append(("flush", None))

    def text(self):
        return "".join(text for call, text in self.calls if call == "write")


def generated(*args, monkeypatch) -> Recorder:
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    cli.main(["generate", *args, "--device", "cpu"])
    return out


def fails(args, capsys) -> str:
    """stderr of a CLI call that must exit with status 1."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    return err


def test_generate_greedy_is_the_same_from_our_directory_and_the_hugging_face_export(tiny_models, monkeypatch):
    root, _ = tiny_models
    hf_model = GPT2LMHeadModel.from_pretrained(str(root / paths.HF_DIR)).eval()  # the independent reference
    prompt = tokenizer.encode("ROMEO:")
    reference = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                  attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    expected = tokenizer.decode(reference[0, len(prompt):].tolist())
    for model_dir in (paths.PRETRAIN_DIR, paths.HF_DIR):
        out = generated(str(root / model_dir), "ROMEO:", "--greedy", "--max-tokens", "12", monkeypatch=monkeypatch)
        assert out.text() == expected + "\n"


def test_generate_streams_a_piece_per_token_each_flushed(tiny_models, monkeypatch):
    root, model = tiny_models
    prompt = torch.tensor([tokenizer.encode("ROMEO:")])
    ids = prompt
    with torch.no_grad():  # greedy over the full forward, without the cache the streamed decoder runs on
        for _ in range(12):
            ids = torch.cat([ids, model(ids[:, -model.config.block_size :])[0][:, -1:].argmax(dim=-1)], dim=1)
    new_ids = ids[0, prompt.size(1):].tolist()
    pieces = [tokenizer.decode([i]) for i in new_ids]
    assert not any("\ufffd" in p for p in pieces)  # every token of this continuation is whole characters
    out = generated(str(root / paths.PRETRAIN_DIR), "ROMEO:", "--greedy", "--max-tokens", "12",
                    monkeypatch=monkeypatch)
    assert out.calls == [call for piece in pieces + ["\n"] for call in (("write", piece), ("flush", None))]


def test_generate_seed_makes_sampling_repeatable(tiny_models, monkeypatch):
    model_dir = str(tiny_models[0] / paths.PRETRAIN_DIR)

    def sample(seed: str) -> str:
        return generated(model_dir, "ROMEO:", "--temperature", "1", "--top-k", "0", "--seed", seed,
                         "--max-tokens", "12", monkeypatch=monkeypatch).text()

    assert sample("1") == sample("1")
    assert sample("1") != sample("2")


def test_generate_reads_the_prompt_from_stdin_or_a_file(tiny_models, monkeypatch, tmp_path):
    model_dir = str(tiny_models[0] / paths.PRETRAIN_DIR)
    greedy = ("--greedy", "--max-tokens", "5")
    expected = generated(model_dir, "ROMEO:", *greedy, monkeypatch=monkeypatch).text()
    monkeypatch.setattr(sys, "stdin", io_module.StringIO("ROMEO:"))
    assert generated(model_dir, "-", *greedy, monkeypatch=monkeypatch).text() == expected
    (tmp_path / "prompt.txt").write_text("ROMEO:")
    assert generated(model_dir, "--prompt-file", str(tmp_path / "prompt.txt"), *greedy,
                     monkeypatch=monkeypatch).text() == expected


def broken_copy(tiny_models, tmp_path):
    copy = tmp_path / "model"
    copy.mkdir()
    for path in (tiny_models[0] / paths.PRETRAIN_DIR).iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_generate_errors_name_the_file_and_exit_1(tiny_models, tmp_path, capsys):
    assert f"{tmp_path / 'absent'}: does not exist" in fails(["generate", str(tmp_path / "absent"), "x"], capsys)
    broken = broken_copy(tiny_models, tmp_path)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:1000])
    err = fails(["generate", str(broken), "x"], capsys)
    assert f"{broken / 'model.safetensors'}: not a readable safetensors file" in err and "dvc repro" in err
    (broken / "config.json").unlink()
    assert f"{broken / 'config.json'}: not found" in fails(["generate", str(broken), "x"], capsys)


def test_generate_refuses_a_reward_model_but_info_describes_it(tiny_models, tmp_path, capsys):
    reward = RewardModel(weights.load_model(tiny_models[0] / paths.PRETRAIN_DIR))
    save_reward_model(reward, tmp_path / "reward")
    err = fails(["generate", str(tmp_path / "reward"), "x"], capsys)
    assert f"{tmp_path / 'reward'}: a reward model" in err and "models/pretrain" in err
    cli.main(["info", str(tmp_path / "reward"), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "reward"
    assert info["parameters"]["total"] == sum(p.numel() for p in reward.parameters())
    assert info["parameters"]["head"] == 8 + 1


def test_info_counts_the_parameters_and_reads_the_stages_metrics(tiny_models, capsys, monkeypatch):
    root, model = tiny_models
    monkeypatch.chdir(root)  # the pipeline's directories are relative to the project
    total = sum(p.numel() for p in model.parameters())
    cli.main(["info", str(paths.PRETRAIN_DIR)])
    text = capsys.readouterr().out
    assert f"parameters: {total:,} " in text
    assert "n_layer 1, n_head 2, n_embd 8, block_size 16, vocab_size 50257" in text
    assert "metrics (metrics/pretrain.json): whole_val.loss 4.5, whole_val.perplexity 90" in text
    cli.main(["info", str(paths.HF_DIR), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "huggingface" and info["parameters"]["total"] == total
    assert info["files"]["model.safetensors"] == (root / paths.HF_DIR / "model.safetensors").stat().st_size
    assert info["metrics"] is None  # models/hf's stage, compare, has no metrics file here


def test_info_prefers_the_metrics_json_inside_the_directory(tiny_models, tmp_path, capsys):
    copy = broken_copy(tiny_models, tmp_path)
    (copy / "metrics.json").write_text(json.dumps({"report": {"accuracy": 0.75}}))
    cli.main(["info", str(copy), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["metrics_file"] == str(copy / "metrics.json") and info["metrics"] == {"report": {"accuracy": 0.75}}
