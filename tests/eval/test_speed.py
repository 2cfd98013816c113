"""The side-by-side speed measurement: what it times, on which shape, and that it leaves torch as it was."""
import torch

from tinygpt.eval.speed import (SpeedSettings, compare_speed, format_speed,
                                torch_threads)
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.hf import hf_from_gpt


def test_compare_speed_times_both_implementations_on_one_shape():
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=200, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    threads_before = torch.get_num_threads()
    result = compare_speed(ours, hf_from_gpt(ours), SpeedSettings(batch_size=3, seq_len=64, warmup=1, repeats=2, threads=1),
                           torch.device("cpu"), "fp32")
    assert torch.get_num_threads() == threads_before and result.threads == 1
    assert result.settings.seq_len == 16  # cropped to the block size
    for impl in ("tinygpt", "transformers"):
        for mode in ("forward", "train_step"):
            timing = result.timings[impl][mode]
            assert len(timing.seconds) == 2 and timing.tokens == 3 * 16 and timing.tokens_per_s > 0
    m = result.metrics()
    ratio = m["tinygpt"]["forward_tokens_per_s"] / m["transformers"]["forward_tokens_per_s"]
    assert m["ratio"]["forward_ours_over_hf"] == ratio
    assert not ours.training and all(p.grad is None for p in ours.parameters())
    assert "ratio" in format_speed(result)


def test_torch_threads_zero_leaves_the_count():
    before = torch.get_num_threads()
    with torch_threads(0) as n:
        assert n == before
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
