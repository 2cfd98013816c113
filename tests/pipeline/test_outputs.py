"""The files the stages write: the pretrain stage's samples draw each prompt with its own seed."""
import torch

from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.pipeline.outputs import pretrain as pretrain_outputs
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import TrainResult


def test_pretrain_samples_use_seed_plus_the_prompts_index(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    result = TrainResult(model=model, history=[], evals=[], metrics={"precision": "fp32"},
                         checkpoint_dir=tmp_path, resumed_from=0)
    # The same prompt three times: with one shared seed the three continuations were identical.
    train_params = TrainParams(sample_prompts=["ROMEO:"] * 3, sample_tokens=12, sample_temperature=1.0,
                               sample_top_k=None, seed=11)
    samples = pretrain_outputs.samples(result, train_params)
    assert [s["seed"] for s in samples] == [11, 12, 13]
    assert len({s["completion"] for s in samples}) == 3
    # Each is the one evaluate's sampler gives for its seed: repeatable prompt by prompt.
    again = pretrain_outputs.samples(result, TrainParams(sample_prompts=["ROMEO:"], sample_tokens=12,
                                                         sample_temperature=1.0, sample_top_k=None, seed=12))
    assert again[0]["completion"] == samples[1]["completion"]
