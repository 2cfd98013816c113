"""train.init_from: pretraining starts from the weights of our own model folder or a Hugging Face GPT-2 one
(its step-0 loss is that model's, computed independently), refuses another shape naming both, says what to
do when the source is missing, and keeps the checkpoint key of a run from scratch unchanged."""
import copy
import dataclasses
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinygpt.core.compute import ComputeParams
from tinygpt.data.batches import fixed_batches
from tinygpt.data.tokens import read_tokens, write_tokens
from tinygpt.model import weights
from tinygpt.model.config import GPTConfig
from tinygpt.model.shortlist import ShortlistGPT
from tinygpt.model.vocabulary import CompactVocabulary
from tinygpt.train.checkpoint import key_material, run_key
from tinygpt.train.config import TrainParams
from tinygpt.train.init_from import InitFromError, init_weights
from tinygpt.train.loop import train

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
FAST = TrainParams(max_steps=6, batch_size=8, learning_rate=1e-2, min_lr=1e-3, warmup_steps=2, eval_interval=3,
                   eval_batches=2, checkpoint_interval=3, compile=False, optimizer="adamw", weight_decay=0.1,
                   unseen_smoothing=0.0, input_noise=0.0)
CPU_FP32 = ComputeParams(device="cpu", precision="fp32")
USED_IDS = 48  # the corpus uses ids 0..47: the shortlist shares one row among the other 16


@pytest.fixture
def corpus(tmp_path):
    """train.bin / val.bin: a fixed shuffle of ids 0..47, repeated (val is the same cycle)."""
    cycle = np.random.default_rng(0).permutation(USED_IDS)
    paths = tmp_path / "train.bin", tmp_path / "val.bin"
    write_tokens(paths[0], np.tile(cycle, 10))
    write_tokens(paths[1], np.tile(cycle, 2))
    return paths


def run(corpus, root, p, config=TINY):
    return train(config, p, corpus[0], corpus[1], root, compute=CPU_FP32)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_val_loss(logits_of, corpus, p: TrainParams, block_size: int) -> float:
    """Mean cross-entropy over the loop's fixed val batches, of a function from inputs to full logits."""
    batches = fixed_batches(read_tokens(corpus[1]), block_size, p.batch_size, p.eval_batches, p.seed + 2, "val.bin")
    with torch.no_grad():
        losses = [F.cross_entropy(logits_of(x).flatten(0, 1).float(), y.flatten()).item() for x, y in batches]
    return float(np.mean(losses))


def own_model(folder, seed: int = 3):
    """A model as the pretrain stage saves one: a shortlisted GPT expanded (its unseen rows equal), with
    weights far from the scratch initialisation, and no dropout (the run's may differ: not a shape)."""
    torch.manual_seed(seed)
    vocab = CompactVocabulary.of_tokens(np.arange(USED_IDS), TINY.vocab_size)
    compact = ShortlistGPT(dataclasses.replace(TINY, dropout=0.0), vocab)
    with torch.no_grad():
        for param in compact.parameters():
            param.add_(0.3 * torch.randn_like(param))
    model = compact.to_full().eval()
    folder.mkdir(exist_ok=True)
    weights.save_model(model, folder)
    return model


@pytest.mark.parametrize("shortlist", [False, True], ids=["full", "shortlist"])
def test_starts_from_our_own_model_folder(corpus, tmp_path, single_thread, shortlist):
    source = own_model(tmp_path / "pretrain")
    p = dataclasses.replace(FAST, init_from=str(tmp_path / "pretrain"), shortlist_vocab=shortlist)
    result = run(corpus, tmp_path / "ckpt", p)
    expected = reference_val_loss(lambda x: source(x)[0], corpus, p, TINY.block_size)
    assert expected > np.log(64) + 0.5  # far from where random weights start
    assert result.evals[0]["step"] == 0 and result.evals[0]["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"] - 0.5  # and training goes on from there
    assert result.metrics["init"] == {"from": str(tmp_path / "pretrain"), "format": "tinygpt",
                                      "sha256": sha256(tmp_path / "pretrain" / "model.safetensors")}


def test_other_weights_in_the_folder_start_a_new_checkpoint(corpus, tmp_path, single_thread):
    own_model(tmp_path / "pretrain")
    p = dataclasses.replace(FAST, init_from=str(tmp_path / "pretrain"))
    first = run(corpus, tmp_path / "ckpt", p)
    assert run(corpus, tmp_path / "ckpt", p).resumed_from == p.max_steps  # same weights: resumed
    own_model(tmp_path / "pretrain", seed=4)
    other = run(corpus, tmp_path / "ckpt", p)
    assert other.resumed_from == 0 and other.checkpoint_dir != first.checkpoint_dir


@pytest.fixture
def hf_folder(tmp_path):
    """A small random GPT2LMHeadModel with GPT-2's vocabulary, saved as Hugging Face saves one."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32,
                                                                 vocab_size=50257)).eval()
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


@pytest.mark.parametrize("shortlist", [False, True], ids=["full", "shortlist"])
def test_starts_from_a_hugging_face_gpt2_folder(corpus, tmp_path, single_thread, hf_folder, shortlist):
    hf_model, folder = hf_folder
    config = GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    p = dataclasses.replace(FAST, max_steps=2, eval_interval=2, init_from=str(folder), shortlist_vocab=shortlist)
    result = run(corpus, tmp_path / "ckpt", p, config)
    original = reference_val_loss(lambda x: hf_model(input_ids=x).logits, corpus, p, 32)
    if not shortlist:
        assert result.evals[0]["val_loss"] == pytest.approx(original, rel=1e-5)
    else:
        # The shortlist starts from GPT-2 with the 50,209 unseen tokens' rows replaced by their mean: its loss
        # is that model's (computed by transformers), a little below the original's, since the mean row's
        # logit is the mean of theirs and exp is convex (their probability mass can only shrink).
        mean_model = copy.deepcopy(hf_model)
        with torch.no_grad():
            wte = mean_model.transformer.wte.weight
            wte[USED_IDS:] = wte[USED_IDS:].double().mean(0).float()
        expected = reference_val_loss(lambda x: mean_model(input_ids=x).logits, corpus, p, 32)
        assert result.evals[0]["val_loss"] == pytest.approx(expected, rel=1e-5)
        assert original - 0.05 < expected < original
    assert result.metrics["init"] == {"from": str(folder), "format": "huggingface",
                                      "sha256": sha256(folder / "model.safetensors")}


def test_starts_from_the_compare_stages_hugging_face_export(corpus, tmp_path, single_thread):
    """models/hf is our model written by the compare stage (hf.export_hf_dir): starting from it is starting
    from that model, as transformers reads it back."""
    from tinygpt.model.hf import export_hf_dir

    from tinygpt.model.gpt import GPT

    config = dataclasses.replace(TINY, vocab_size=50257, dropout=0.0)  # an export carries GPT-2's tokenizer
    torch.manual_seed(5)
    source = GPT(config).eval()
    export_hf_dir(source, tmp_path / "hf")
    p = dataclasses.replace(FAST, init_from=str(tmp_path / "hf"), shortlist_vocab=False)
    result = run(corpus, tmp_path / "ckpt", p, config)
    expected = reference_val_loss(lambda x: source(x)[0], corpus, p, TINY.block_size)
    assert result.evals[0]["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert result.metrics["init"]["format"] == "huggingface"


def test_starts_from_a_hub_id_in_the_hugging_face_cache(tmp_path, hf_folder, monkeypatch):
    """A hub id is read from the cache (offline here), and its weights file's digest describes it."""
    import huggingface_hub.constants
    from support import fake_hub_repo

    hf_model, folder = hf_folder
    snapshot = fake_hub_repo(tmp_path / "hub", "tinygpt-tests/tiny", {f.name: f.read_bytes() for f in folder.iterdir()})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at call time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    config = GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
    init = init_weights(config, dataclasses.replace(FAST, init_from="tinygpt-tests/tiny"))
    assert init.info == {"from": "tinygpt-tests/tiny", "format": "huggingface",
                         "sha256": sha256(snapshot / "model.safetensors")}
    assert torch.equal(init.model.transformer.wte.weight, hf_model.transformer.wte.weight)
    assert torch.equal(init.model.transformer.h[1].attn.c_attn.weight, hf_model.transformer.h[1].attn.c_attn.weight.t())
    assert init.model.config == config  # the model section's, dropout included


def test_another_shape_is_an_error_naming_both_values(corpus, tmp_path, single_thread):
    own_model(tmp_path / "pretrain")
    small = dataclasses.replace(TINY, n_layer=1, n_embd=16)
    p = dataclasses.replace(FAST, init_from=str(tmp_path / "pretrain"))
    with pytest.raises(InitFromError, match=r"train\.init_from .*pretrain has n_layer 2, n_embd 32 but params\.yaml "
                                            r"model has n_layer 1, n_embd 16; set the model section"):
        run(corpus, tmp_path / "ckpt", p, small)
    with pytest.raises(InitFromError, match="logit_bias false but params.yaml model has logit_bias true"):
        run(corpus, tmp_path / "ckpt", p, dataclasses.replace(TINY, logit_bias=True))


def test_a_missing_folder_is_an_error_naming_the_param(corpus, tmp_path, single_thread):
    p = dataclasses.replace(FAST, init_from=str(tmp_path / "missing"))
    with pytest.raises(InitFromError, match=r"train\.init_from .*missing: .*does not exist"):
        run(corpus, tmp_path / "ckpt", p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitFromError, match=r"train\.init_from .*empty: .*config\.json: not found"):
        run(corpus, tmp_path / "ckpt", dataclasses.replace(FAST, init_from=str(tmp_path / "empty")))


def test_an_unavailable_hub_id_is_an_error_saying_what_to_do(corpus, tmp_path, single_thread, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = dataclasses.replace(FAST, init_from="tinygpt-tests/no-such-model")
    with pytest.raises(InitFromError, match=r"train\.init_from tinygpt-tests/no-such-model: .*unavailable "
                                            r"\(not in the cache and HF_HUB_OFFLINE is set.*hf download.*scratch"):
        run(corpus, tmp_path / "ckpt", p)


def test_an_empty_init_from_is_a_params_error():
    with pytest.raises(ValueError, match=r"train\.init_from = ''"):
        dataclasses.replace(FAST, init_from="").validate()


def test_scratch_keeps_the_checkpoint_key_it_had(tmp_path):
    """A run from random weights hashes the same material as before init_from existed; a source joins the
    key with its weights' digest, so other weights under the same name never resume its checkpoint."""
    tokens = tmp_path / "train.bin"
    tokens.write_bytes(b"\0\1" * 8)
    config, p = GPTConfig(), TrainParams()
    scratch = key_material(config, p, [tokens], init={"from": "scratch"})
    assert "init_from" not in scratch["train"] and "init" not in scratch
    assert scratch == key_material(config, p, [tokens])
    fields = {f.name for f in dataclasses.fields(TrainParams)} - {"init_from", "nproc_per_node", "checkpoint_interval"}
    assert set(scratch["train"]) == fields
    named = dataclasses.replace(p, init_from="models/hf")
    info = {"from": "models/hf", "format": "huggingface", "sha256": "a" * 64}
    material = key_material(config, named, [tokens], init=info)
    assert material["train"]["init_from"] == "models/hf" and material["init"] == info
    assert run_key(material) != run_key(key_material(config, named, [tokens], init={**info, "sha256": "b" * 64}))
    with pytest.raises(ValueError, match="needs the initial weights"):
        key_material(config, named, [tokens])
