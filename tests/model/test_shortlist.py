"""The compact training vocabulary is exact: its losses are the full GPT-2's, token for token, and its
expansion is an ordinary GPT whose unseen tokens share one row, and compacting a GPT (from_full) is its inverse."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tinygpt.core.compute import ComputeParams
from tinygpt.core.errors import ParamsError
from tinygpt.data.tokens import write_tokens
from tinygpt.model import weights
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import CompactHead
from tinygpt.model.shortlist import ShortlistGPT, good_turing_unseen_mass
from tinygpt.model.vocabulary import CompactVocabulary
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import train

CONFIG = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
TRAIN_IDS = np.random.default_rng(0).integers(0, 120, 4000)  # ids 120..299 never occur in training


@pytest.fixture(params=[False, True], ids=["plain", "logit_bias"])
def compact(request):
    """The compact model, and the same with a random logit bias (model.logit_bias), which expands too."""
    torch.manual_seed(0)
    model = ShortlistGPT(dataclasses.replace(CONFIG, logit_bias=request.param), CompactVocabulary.of_tokens(TRAIN_IDS, 300))
    if request.param:
        with torch.no_grad():
            model.gpt.lm_head.bias.normal_()
    return model.eval()


def batch_with_unseen_tokens():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 300, (3, 16), generator=gen), torch.randint(0, 300, (3, 16), generator=gen)
    y[0, :4] = -1  # ignored positions
    return x, y


def test_vocabulary_maps_seen_tokens_in_order_and_unseen_ones_to_the_shared_row():
    vocab = CompactVocabulary.of_tokens(np.array([5, 2, 5, 9]), 12)
    assert vocab.n_shared == 9 and vocab.n_rows == 4 and vocab.counts.tolist() == [1, 1, 1, 9]
    assert vocab.row_of_id.tolist() == [3, 3, 0, 3, 3, 1, 3, 3, 3, 2, 3, 3]
    assert vocab.representatives().tolist() == [2, 5, 9, 0]
    everything = CompactVocabulary.of_tokens(np.arange(12), 12)
    assert everything.n_shared == 0 and everything.n_rows == 12
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CompactVocabulary.of_tokens(np.array([1, 12]), 12)


def test_good_turing_mass_is_the_fraction_of_tokens_seen_once():
    assert good_turing_unseen_mass(np.array([1, 1, 2, 3, 4, 4, 4, 5])) == pytest.approx(3 / 8)


def test_compact_loss_equals_the_full_models_loss(compact):
    x, y = batch_with_unseen_tokens()
    full = compact.to_full().eval()
    assert full.transformer.wte.weight.shape == (300, 32)
    _, compact_loss = compact(x, y)
    _, full_loss = full(x, y)
    assert compact_loss.item() == pytest.approx(full_loss.item(), rel=1e-6)


def test_compact_log_probabilities_are_the_full_ones(compact):
    x, _ = batch_with_unseen_tokens()
    compact_logits, _ = compact(x)
    full_logits, _ = compact.to_full().eval()(x)
    compact_lp, full_lp = compact_logits.log_softmax(-1), full_logits.log_softmax(-1)
    seen = compact.vocab.representatives()[:-1]  # the ids with a row of their own
    torch.testing.assert_close(full_lp[..., seen], compact_lp[..., :-1], atol=1e-5, rtol=1e-5)
    # Every unseen token has the same probability: the class's, shared by 180 tokens.
    unseen = torch.arange(120, 300)
    expected = (compact_lp[..., -1] - math.log(180))[..., None].expand(-1, -1, 180)
    torch.testing.assert_close(full_lp[..., unseen], expected, atol=1e-5, rtol=1e-5)


def test_expansion_gives_every_unseen_token_the_shared_row(compact):
    wte = compact.to_full().transformer.wte.weight
    shared = compact.gpt.transformer.wte.weight[-1]
    assert all(torch.equal(wte[i], shared) for i in range(120, 300))
    assert torch.equal(wte[:120], compact.gpt.transformer.wte.weight[:120])
    assert compact.param_counts().total == compact.to_full().param_counts().total
    if compact.config.logit_bias:
        bias = compact.to_full().lm_head.bias
        assert (bias[120:] == compact.gpt.lm_head.bias[-1]).all() and torch.equal(bias[:120], compact.gpt.lm_head.bias[:120])


def test_compacting_the_expansion_gives_back_the_same_model_exactly(compact):
    x, y = batch_with_unseen_tokens()
    again = ShortlistGPT.from_full(compact.to_full(), compact.vocab).eval()
    logits, loss = again(x, y)
    expected_logits, expected_loss = compact(x, y)
    assert torch.equal(logits, expected_logits) and loss.item() == expected_loss.item()
    for name, tensor in compact.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_compacting_a_gpt_keeps_the_seen_rows_and_averages_the_unseen_ones():
    torch.manual_seed(2)
    full = GPT(dataclasses.replace(CONFIG, logit_bias=True)).eval()
    with torch.no_grad():
        full.lm_head.bias.normal_()
    vocab = CompactVocabulary.of_tokens(TRAIN_IDS, 300)
    compact = ShortlistGPT.from_full(full, vocab, unseen_smoothing=0.1)
    wte, bias = full.transformer.wte.weight, full.lm_head.bias
    assert torch.equal(compact.gpt.transformer.wte.weight[:120], wte[:120])  # ids 0..119 are rows 0..119
    torch.testing.assert_close(compact.gpt.transformer.wte.weight[120], wte[120:].mean(0), rtol=0, atol=1e-7)
    assert torch.equal(compact.gpt.lm_head.bias[:120], bias[:120])
    assert compact.gpt.lm_head.bias[120].item() == pytest.approx(bias[120:].mean().item(), abs=1e-6)
    assert compact.unseen_smoothing == 0.1 and not compact.training
    for name, tensor in full.state_dict().items():
        if "wte" not in name and "lm_head" not in name:
            assert torch.equal(compact.gpt.state_dict()[name], tensor), name


def test_unseen_smoothing_moves_target_mass_to_the_unseen_class_in_training_only():
    torch.manual_seed(0)
    smoothed = ShortlistGPT(CONFIG, CompactVocabulary.of_tokens(TRAIN_IDS, 300), unseen_smoothing=0.1)
    x, y = batch_with_unseen_tokens()
    y = y.clamp(min=0) % 120  # seen targets only, as in training
    smoothed.eval()
    logits, nll = smoothed(x, y)
    class_nll = -logits.float().log_softmax(-1)[..., -1].mean()
    smoothed.train()
    _, objective = smoothed(x, y)
    assert objective.item() == pytest.approx(0.9 * nll.item() + 0.1 * class_nll.item(), rel=1e-5)


def test_training_with_the_shortlist_matches_full_vocabulary_training_in_loss(tmp_path):
    """Same data, both parameterisations learn; the shortlist's unseen rows stay identical."""
    train_path, val_path = tmp_path / "train.bin", tmp_path / "val.bin"
    cycle = np.random.default_rng(0).permutation(48)  # 48 of 64 ids occur in training
    write_tokens(train_path, np.tile(cycle, 10))
    write_tokens(val_path, np.tile(cycle, 2))
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    p = TrainParams(max_steps=100, batch_size=8, learning_rate=1e-2, min_lr=1e-3, warmup_steps=5, eval_interval=50,
                    eval_batches=2, checkpoint_interval=100, compile=False, optimizer="adamw", weight_decay=0.1,
                    unseen_smoothing=0.0, input_noise=0.0)
    cpu = ComputeParams(device="cpu", precision="fp32")
    short = train(config, p, train_path, val_path, tmp_path / "a", compute=cpu)
    full = train(config, dataclasses.replace(p, shortlist_vocab=False), train_path, val_path, tmp_path / "b", compute=cpu)
    assert short.evals[0]["val_loss"] == pytest.approx(math.log(64), abs=0.1)
    assert short.evals[-1]["val_loss"] < 0.1 and full.evals[-1]["val_loss"] < 0.1
    unused = sorted(set(range(64)) - set(cycle.tolist()))
    rows = short.model.transformer.wte.weight[unused]
    assert torch.equal(rows, rows[:1].expand_as(rows))
    assert short.model.config.vocab_size == 64  # the expanded GPT, ready to save


@pytest.mark.parametrize("changes, key", [
    ({"unseen_smoothing": 1.0}, "train.unseen_smoothing"),
    ({"unseen_smoothing": -0.1}, "train.unseen_smoothing"),
    ({"shortlist_vocab": False, "unseen_smoothing": 0.01}, "train.unseen_smoothing"),
])
def test_bad_shortlist_params_name_the_key(changes, key):
    with pytest.raises(ParamsError, match=key):
        dataclasses.replace(TrainParams(), **changes).validate()


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_training_steps_follow_the_full_gpt_whose_unseen_rows_start_equal(kind):
    """AdamW (or Muon + AdamW) with clipping on the compact model = the same on its expansion, step for
    step (up to float rounding, which AdamW's first steps magnify for near-zero gradients: a fraction of
    one step, lr)."""
    from tinygpt.train.optim import build_optimizer

    torch.manual_seed(0)
    compact = ShortlistGPT(CONFIG, CompactVocabulary.of_tokens(TRAIN_IDS, 300)).train()
    full = compact.to_full().train()
    p = TrainParams(learning_rate=3e-3, weight_decay=0.1, muon_weight_decay=0.1, grad_clip=0.5, optimizer=kind)
    optimizers = [build_optimizer(m, p, torch.device("cpu")) for m in (compact, full)]
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        x = torch.from_numpy(TRAIN_IDS[torch.randint(0, 3000, (4,), generator=gen).numpy()[:, None] + np.arange(17)])
        norms, losses = [], []
        for model, optimizer in zip((compact, full), optimizers):
            _, loss = model(x[:, :-1], x[:, 1:])
            loss.backward()
            losses.append(loss.item())
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)))
            optimizer.step()
            optimizer.zero_grad()
        # Muon orthogonalises in bf16, where the two gradients' float rounding can round differently.
        norm_rel, loss_rel = (1e-3, 1e-3) if kind == "muon" else (1e-4, 1e-5)
        assert norms[0] == pytest.approx(norms[1], rel=norm_rel) and losses[0] == pytest.approx(losses[1], rel=loss_rel)
    for name, value in full.state_dict().items():
        # Muon lifts a gradient's small singular directions to full size, float rounding in them too:
        # the two runs stay within a fraction of one step (an element of a Muon step is ~lr/3 here).
        atol = p.learning_rate / (2 if kind == "muon" else 20)
        torch.testing.assert_close(compact.to_full().state_dict()[name], value, atol=atol, rtol=0)


def test_the_map_is_saved_with_the_weights_while_the_rows_stay_shared(tmp_path):
    """to_full carries pretraining's map; save_model writes it and load_model reads it back, and a model
    whose embedding was trained apart is saved without it (its rows are no longer shared)."""
    full = ShortlistGPT(CONFIG, CompactVocabulary.of_tokens(TRAIN_IDS, 300)).to_full()
    weights.save_model(full, tmp_path / "shared")
    loaded = weights.load_model(tmp_path / "shared")
    assert torch.equal(loaded.vocabulary.row_of_id, CompactVocabulary.of_tokens(TRAIN_IDS, 300).row_of_id)
    assert CompactHead.of(loaded) is not None
    with torch.no_grad():
        loaded.transformer.wte.weight[200] += 1e-3  # one unseen id's row moves away from its row's others
    assert CompactHead.of(loaded) is None
    weights.save_model(loaded, tmp_path / "shared")
    assert not (tmp_path / "shared" / weights.VOCABULARY_FILE).exists()
    assert weights.load_model(tmp_path / "shared").vocabulary is None


def swapped_map() -> torch.Tensor:
    """A valid map of another model: a seen id (0) and an unseen one (299) trade rows."""
    row_of_id = CompactVocabulary.of_tokens(TRAIN_IDS, 300).row_of_id.clone()
    row_of_id[[0, 299]] = row_of_id[[299, 0]]
    return row_of_id.int()


@pytest.mark.parametrize("row_of_id, message", [
    (torch.zeros(299, dtype=torch.int32), "row_of_id of 300 ids"),
    (torch.arange(300, dtype=torch.int32) - 1, "numbered from 0 with none unused"),
    (torch.arange(300, dtype=torch.int32) * 2, "numbered from 0 with none unused"),
    (swapped_map(), "have different embeddings"),
])
def test_a_broken_saved_map_names_the_file(tmp_path, row_of_id, message):
    weights.save_model(ShortlistGPT(CONFIG, CompactVocabulary.of_tokens(TRAIN_IDS, 300)).to_full(), tmp_path)
    path = tmp_path / weights.VOCABULARY_FILE
    save_file({"row_of_id": row_of_id}, str(path))
    with pytest.raises(weights.ModelFileError, match=f"{path}: .*{message}"):
        weights.load_model(tmp_path)
