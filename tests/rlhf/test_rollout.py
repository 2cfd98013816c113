import pytest
import torch

from tinygpt.data.tokenizer import EOT_ID, decode
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.rlhf.rollout import Rollout, response_mask, sample, token_logprobs

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=EOT_ID + 1, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()


def test_response_mask_keeps_the_first_end_of_text_and_drops_what_follows():
    responses = torch.tensor([[5, EOT_ID, EOT_ID, 7], [5, 6, 7, 8], [EOT_ID, 1, 2, 3]])
    assert response_mask(responses).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_rollout_views():
    seqs = torch.tensor([[1, 2, 3, EOT_ID, EOT_ID], [1, 2, 262, 3797, 5]])  # " the cat"
    rollout = Rollout(seqs, 2, response_mask(seqs[:, 2:]))
    assert rollout.last_index.tolist() == [3, 4]
    assert rollout.response_ids() == [[3, EOT_ID], [262, 3797, 5]]
    assert rollout.texts()[1].startswith(" the cat")
    assert rollout.texts()[0] == decode([3])  # the end-of-text is not text: text quality never counts it


def test_sample_is_seeded_and_log_probs_are_those_of_the_sampling_distribution():
    model = tiny_gpt()
    prompts = torch.randint(0, 1000, (3, 4), generator=torch.Generator().manual_seed(1))
    a = sample(model, prompts, 6, 0.7, torch.Generator().manual_seed(2))
    b = sample(model, prompts, 6, 0.7, torch.Generator().manual_seed(2), "fp32", batch_size=3)
    assert torch.equal(a.sequences, b.sequences) and a.sequences.shape == (3, 10)
    assert torch.equal(a.sequences[:, :4], prompts)
    # the log-prob of each sampled token, recomputed from the full sequence, matches a step-by-step one
    logp = token_logprobs(model, a.sequences, a.prompt_len, temperature=0.7)
    with torch.no_grad():
        step_logits = model(a.sequences[:, :5])[0][:, -1, :]
    expected = torch.log_softmax(step_logits / 0.7, dim=-1).gather(1, a.sequences[:, 5:6]).squeeze(1)
    assert logp[:, 1].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
