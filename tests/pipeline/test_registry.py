"""The pipeline's models as MLflow models: logged, registered, loaded back by URI, and served over HTTP."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tinygpt.data.tokenizer import EOT_ID, N_VOCAB, decode, encode
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.sampling import generate
from tinygpt.model.weights import load_model, save_model
from tinygpt.pipeline import model_uri, registry, tracking
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf.reward_model import RewardModel, load_reward_model, pad_sequences, save_reward_model

CONFIG = GPTConfig(vocab_size=N_VOCAB, block_size=32, n_layer=1, n_head=1, n_embd=16)


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def greedy_text(model: GPT, prompt: str, tokens: int) -> str:
    out = generate(model, torch.tensor([encode(prompt)]), tokens, temperature=0.0, eot_id=EOT_ID)[0]
    return decode([i for i in out[len(encode(prompt)):].tolist() if i != EOT_ID])


def log_pretrain(tmp_path: Path, seed: int = 0) -> str | None:
    save_model(tiny_model(seed), tmp_path / f"model{seed}")
    with tracking.stage_run("pretrain", {}, TrackingParams("exp")):
        return registry.log_tinygpt_model(tmp_path / f"model{seed}", "exp-pretrain", {"whole_val": {"loss": 4.5}})


def test_a_registered_model_loads_by_alias_and_generates(mlflow_uri, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    assert log_pretrain(tmp_path) == "1"
    loaded = mlflow.pyfunc.load_model(registry.model_uri("exp-pretrain"))
    greedy = loaded.predict(["ROMEO:", "To be"], params={"max_tokens": 6, "temperature": 0.0})
    model = tiny_model()
    assert greedy == [greedy_text(model, "ROMEO:", 6), greedy_text(model, "To be", 6)]
    sampled = [loaded.predict(["ROMEO:"], params={"max_tokens": 12, "seed": s})[0] for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]
    # the newest version also answers to MLflow's own `latest` (the alias name itself is reserved)
    assert mlflow.pyfunc.load_model("models:/exp-pretrain/latest").predict(
        ["ROMEO:"], params={"max_tokens": 6, "temperature": 0.0}) == greedy[:1]


def test_same_weights_add_no_version_new_weights_move_the_alias(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert log_pretrain(tmp_path, seed=0) == "1"
    assert log_pretrain(tmp_path, seed=0) is None
    assert log_pretrain(tmp_path, seed=1) == "2"
    client = tracking.client()
    assert client.get_model_version_by_alias("exp-pretrain", registry.CURRENT_ALIAS).version == 2
    assert len(client.search_model_versions("name = 'exp-pretrain'")) == 2


def test_the_logged_model_holds_the_weights_and_metrics(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log_pretrain(tmp_path)
    local = model_uri.local_model_dir(registry.model_uri("exp-pretrain"))
    assert json.loads((local / "metrics.json").read_text()) == {"whole_val": {"loss": 4.5}}
    restored, original = load_model(local), tiny_model()
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), original.state_dict().values()))


def test_the_reward_model_scores_texts(mlflow_uri, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    reward = RewardModel(tiny_model())
    torch.nn.init.normal_(reward.head.weight)
    save_reward_model(reward, tmp_path / "reward")
    with tracking.stage_run("reward", {}, TrackingParams("exp")):
        registry.log_tinygpt_model(tmp_path / "reward", "exp-reward", {}, scorer=True)
    texts = ["What a lovely day", "I hate this"]
    scores = mlflow.pyfunc.load_model(registry.model_uri("exp-reward")).predict(texts)
    idx, last = pad_sequences([encode(t) for t in texts])
    expected = load_reward_model(tmp_path / "reward")(idx, last)
    assert scores == pytest.approx(expected.tolist(), abs=1e-5) and scores[0] != scores[1]


def test_the_hugging_face_export_is_a_transformers_model(mlflow_uri, tmp_path, monkeypatch):
    import mlflow

    from tinygpt.model.hf import export_hf_dir

    monkeypatch.chdir(tmp_path)
    export_hf_dir(tiny_model(), tmp_path / "hf")
    with tracking.stage_run("compare", {}, TrackingParams("exp")):
        registry.log_hf_model(tmp_path / "hf", "exp-hf")
    uri = registry.model_uri("exp-hf")
    assert "transformers" in mlflow.models.get_model_info(uri).flavors
    text = mlflow.pyfunc.load_model(uri).predict(["ROMEO:"], params={"max_new_tokens": 5, "do_sample": False})
    assert isinstance(text[0], str) and text[0]
    assert (model_uri.local_model_dir(uri) / "config.json").exists()


def test_offline_the_hugging_face_export_logs_without_hub_requests(mlflow_uri, tmp_path, monkeypatch, caplog):
    """No network (the Hub's endpoint a closed loopback port): logging the export asks the Hub nothing that
    waits, so nothing retries (before: about 50 s of retries and their warnings) and no warning reaches the
    log; the offline switch is restored afterwards."""
    import huggingface_hub.constants
    import mlflow

    from tinygpt.model.hf import export_hf_dir

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: a connection is refused at once
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    export_hf_dir(tiny_model(), tmp_path / "hf")
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    with caplog.at_level(logging.WARNING), tracking.stage_run("compare", {}, TrackingParams("exp")):
        registry.log_hf_model(tmp_path / "hf", "exp-hf")
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_before
    hub_warnings = [f"{r.name}: {r.getMessage()}" for r in caplog.records
                    if r.name.startswith(("huggingface_hub", "mlflow.transformers", "transformers"))]
    assert not hub_warnings, hub_warnings
    local = model_uri.local_model_dir(registry.model_uri("exp-hf"))
    assert "tinygpt" in (local.parent / "model_card.md").read_text()
    assert "transformers" in mlflow.models.get_model_info(registry.model_uri("exp-hf")).flavors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_json(url: str, body: dict, timeout: float = 30.0) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_models_serve_answers_a_generation_request(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log_pretrain(tmp_path)
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", registry.model_uri("exp-pretrain"), "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # the server runs uvicorn from this environment's bin/, which `make test` does not put on PATH
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri,
             "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # the server forks workers: stop the whole group at the end
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the model server did not come up in 180 s"
                time.sleep(1)
        answer = post_json(f"http://127.0.0.1:{port}/invocations",
                           {"inputs": ["ROMEO:"], "params": {"max_tokens": 6, "temperature": 0.0}})
        assert answer["predictions"] == [greedy_text(tiny_model(), "ROMEO:", 6)]
    finally:
        stop_group(server)


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it after 30 s; a group already gone is fine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def test_tinygpt_chat_talks_with_a_registered_model_as_with_its_folder(mlflow_uri, tmp_path, monkeypatch):
    import io

    from tinygpt.pipeline import chat
    from tinygpt.pipeline.streaming import Decoding

    monkeypatch.chdir(tmp_path)
    log_pretrain(tmp_path)
    transcripts = []
    for model in (registry.model_uri("exp-pretrain"), str(tmp_path / "model0")):
        out = io.StringIO()
        chat.talk(model, Decoding(max_tokens=4, temperature=0.0), device="cpu",
                  lines=io.StringIO("Good morrow.\nFarewell.\n"), out=out)
        transcripts.append(out.getvalue())
    assert transcripts[0] == transcripts[1] and transcripts[0].count("JULIET: ") == 2
