"""Training batches: random windows, and input noising that leaves the targets alone."""
import numpy as np
import pytest
import torch

from tinygpt.core.errors import ParamsError
from tinygpt.data.batches import RandomWindows, noised
from tinygpt.train.config import TrainParams

TOKENS = np.arange(1000, dtype=np.uint16) % 250  # token t sits at positions t, t+250, ...


def test_noise_off_draws_nothing_extra_so_batches_are_unchanged():
    plain = RandomWindows(TOKENS, 32, 8, seed=3)
    explicit = RandomWindows(TOKENS, 32, 8, seed=3, input_noise=0.0)
    for _ in range(3):
        (x1, y1), (x2, y2) = plain.next_batch(), explicit.next_batch()
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1[:, 1:], y1[:, :-1])  # inputs and targets are the same text, shifted by one


def test_input_noise_replaces_about_that_fraction_of_inputs_and_never_a_target():
    clean = RandomWindows(TOKENS, 64, 64, seed=5)
    noisy = RandomWindows(TOKENS, 64, 64, seed=5, input_noise=0.2)
    (x_clean, y_clean), (x_noisy, y_noisy) = clean.next_batch(), noisy.next_batch()
    assert torch.equal(y_clean, y_noisy)  # same windows, clean targets
    changed = (x_clean != x_noisy).float().mean().item()
    # A replacement equals the original token 1 time in 250, so the changed share is ~0.2 * 249/250.
    assert changed == pytest.approx(0.2, abs=0.02)
    assert set(x_noisy.unique().tolist()) <= set(TOKENS.tolist())  # draws come from the corpus


def test_noise_draws_follow_the_corpus_unigram_distribution():
    skewed = np.array([7] * 900 + [9] * 100, dtype=np.uint16)
    out = noised(torch.zeros(200, 100, dtype=torch.long), skewed, 1.0, np.random.default_rng(0))
    assert (out == 7).float().mean().item() == pytest.approx(0.9, abs=0.01)
    assert set(out.unique().tolist()) == {7, 9}


def test_noisy_sampler_resumes_from_its_state():
    a = RandomWindows(TOKENS, 16, 4, seed=1, input_noise=0.3)
    a.next_batch()
    saved = a.state_dict()
    expected = a.next_batch()
    b = RandomWindows(TOKENS, 16, 4, seed=99, input_noise=0.3)
    b.load_state_dict(saved)
    got = b.next_batch()
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_bad_input_noise_names_the_key(value):
    with pytest.raises(ParamsError, match="train.input_noise"):
        TrainParams(input_noise=value).validate()
