"""Supervised finetuning on dialogue, the step InstructGPT takes before RLHF: the language-model loss on each
reply's tokens (its closing end-of-text included) and on nothing of the prompt.

The pairs and the template are `tinygpt.data.dialogue`'s. As in PPO and DPO, the token and position
embeddings stay frozen (tuning.freeze_embeddings): the finetuned model keeps the pretrained vocabulary
geometry, its log-probs go through the exact compact head, and the RLHF stages can start from it unchanged.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tinygpt.core.device import autocast
from tinygpt.core.modes import eval_mode, training_mode
from tinygpt.data.dialogue import TURN_SEPARATOR, Example
from tinygpt.data.tokenizer import EOT_ID, decode
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import FullHead, output_head
from tinygpt.model.sampling import generate
from tinygpt.rlhf.sft_config import SftParams
from tinygpt.rlhf.tuning import finetuning_optimizer, freeze_embeddings, lr_factor

IGNORE = -1  # a target the loss skips: a prompt token or padding


@dataclass
class ReplyBatch:
    """Examples padded to one width: the ids the model reads, and the next id wherever it is a reply token."""

    inputs: torch.Tensor  # (n, width)
    targets: torch.Tensor  # (n, width), IGNORE outside the replies

    @property
    def mask(self) -> torch.Tensor:
        return self.targets != IGNORE


def reply_batch(examples: Sequence[Example], device: torch.device | str = "cpu") -> ReplyBatch:
    """Position t reads ids[t] and predicts ids[t + 1]; a reply starting at index p of an example's ids is
    predicted from positions p - 1 to its last but one, so only those targets are kept."""
    width = max(len(e.ids) for e in examples) - 1
    inputs = torch.full((len(examples), width), EOT_ID, dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.as_tensor(example.ids)
        inputs[row, : len(ids) - 1] = ids[:-1]
        start = len(example.prompt) - 1
        targets[row, start : len(ids) - 1] = ids[start + 1 :]
    return ReplyBatch(inputs.to(device), targets.to(device))


def reply_logprobs(model: GPT, batch: ReplyBatch, precision: str, head: FullHead | None = None) -> torch.Tensor:
    """Log-prob (n, width) of every reply token under `model`, 0 outside the replies."""
    head = head or FullHead(model)
    with autocast(batch.inputs.device, precision):
        logp = head.logprobs(model.hidden_states(batch.inputs), batch.targets.clamp_min(0))
    return logp.float() * batch.mask


def reply_loss(model: GPT, batch: ReplyBatch, precision: str, head: FullHead | None = None) -> torch.Tensor:
    """The mean NLL per reply token of the batch (a long reply weighs by its length, as in pretraining)."""
    return -reply_logprobs(model, batch, precision, head).sum() / batch.mask.sum().clamp_min(1)


@torch.no_grad()
def evaluate_replies(model: GPT, examples: Sequence[Example], batch_size: int, precision: str) -> dict[str, float]:
    """Held-out reply NLL in nats per token: over every reply token, over the text alone, and of the closing
    end-of-text (how sure the model is that the speech ends there), plus its mean probability."""
    head = output_head(model, compact=True)
    device = next(model.parameters()).device
    text = end = 0.0
    text_tokens = 0
    end_probability = 0.0
    with eval_mode(model):
        for i in range(0, len(examples), batch_size):
            batch = reply_batch(examples[i : i + batch_size], device)
            logp = reply_logprobs(model, batch, precision, head)
            last = batch.mask.sum(dim=1).sub(1) + batch.mask.float().argmax(dim=1)  # each row's end-of-text target
            end_logp = logp.gather(1, last[:, None]).squeeze(1)
            end += -end_logp.sum().item()
            end_probability += end_logp.exp().sum().item()
            text += -(logp.sum() - end_logp.sum()).item()
            text_tokens += int(batch.mask.sum()) - len(end_logp)
    n = len(examples)
    return {"nll": (text + end) / (text_tokens + n), "text_nll": text / max(1, text_tokens), "end_nll": end / n,
            "end_probability": end_probability / n, "pairs": n, "reply_tokens": text_tokens + n}


@torch.no_grad()
def own_end_row(model: GPT) -> None:
    """Give end-of-text a row and a logit of its own, so that finetuning can teach it.

    Pretraining never saw end-of-text, so it shares the unseen tokens' row (tinygpt.model.shortlist): its
    probability is the unseen class's divided among ~39,000 tokens, and with the embedding frozen no
    finetuning could raise it alone. Here it leaves that row and takes half of the class's probability
    through a logit bias, the other tokens of the row the other half: the class's total is unchanged, so
    is every seen token's probability, and the bias (trained at sft.logit_bias_lr) moves end-of-text alone.
    """
    vocab = model.vocabulary
    if vocab is None or vocab.counts[vocab.row_of_id[EOT_ID]] == 1:
        return  # no shared rows (a model with its full vocabulary), or end-of-text has its own already
    shared = vocab.row_of_id == vocab.row_of_id[EOT_ID]
    n = int(shared.sum())
    bias = model.add_logit_bias()
    bias[shared] += math.log(0.5 * n / (n - 1))  # n - 1 tokens, half the class
    bias[EOT_ID] += math.log(0.5 * n) - math.log(0.5 * n / (n - 1))  # one token, the other half
    model.vocabulary = vocab.with_own_row(EOT_ID)


GROUP = 8  # batches per shuffled group whose examples are sorted by length


def sft_batches(lengths: Sequence[int], batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """Example indices per step, `epochs` shuffled passes. Each run of GROUP batches' worth of shuffled examples
    is sorted by length before it is cut, and the batches are shuffled again: a batch pads to its longest
    example, and the pairs run from 10 to 129 tokens, so random batches would be half padding."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths)
    steps: list[torch.Tensor] = []
    for _ in range(epochs):
        batches = []
        for group in torch.randperm(len(lengths), generator=generator).split(GROUP * batch_size):
            batches += list(group[torch.argsort(lengths[group], stable=True)].split(batch_size))
        steps += [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return steps


def train_sft(
    model: GPT, examples: Sequence[Example], sft_params: SftParams, precision: str,
    on_step: Callable[[int, dict], None] = lambda step, row: None,
    on_eval: Callable[[int, GPT], None] | None = None,
) -> list[dict]:
    """Finetune `model` in place on the reply loss; returns one row per step. `on_eval(steps_done, model)`
    runs before the first step, every `eval_interval` steps and after the last."""
    device = next(model.parameters()).device
    own_end_row(model)
    freeze_embeddings(model)
    optimizer = finetuning_optimizer(list(model.parameters()), sft_params.learning_rate, model,
                                     sft_params.logit_bias_lr)
    head = output_head(model, compact=True)  # after the freeze: it copies the embedding
    steps = sft_batches([len(e.ids) for e in examples], sft_params.batch_size, sft_params.epochs, sft_params.seed)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, sft_params.warmup_steps, len(steps)))
    trained = [w for group in optimizer.param_groups for w in group["params"]]
    history: list[dict] = []
    with training_mode(model, True):
        for step, rows in enumerate(steps):
            if on_eval is not None and sft_params.eval_interval and step % sft_params.eval_interval == 0:
                on_eval(step, model)
            batch = reply_batch([examples[i] for i in rows.tolist()], device)
            loss = reply_loss(model, batch, precision, head)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, sft_params.grad_clip)
            row = {"step": step + 1, "loss": loss.item(), "lr": schedule.get_last_lr()[0],
                   "grad_norm": grad_norm.item(), "reply_tokens": int(batch.mask.sum())}
            optimizer.step()
            schedule.step()
            history.append(row)
            on_step(step + 1, row)
    if on_eval is not None:
        on_eval(len(steps), model)
    return history


@dataclass
class Checkpoints:
    """The held-out curve of a finetuning run and the weights at its best point on the selection pairs."""

    selection: Sequence[Example]
    batch_size: int
    precision: str
    curve: list[dict] | None = None
    best_state: dict | None = None
    best_step: int = 0

    def __call__(self, step: int, model: GPT) -> None:
        row = {"step": step, **evaluate_replies(model, self.selection, self.batch_size, self.precision)}
        self.curve = (self.curve or []) + [row]
        if row["nll"] <= min(r["nll"] for r in self.curve):
            self.best_state, self.best_step = copy.deepcopy(model.state_dict()), step

    def best(self, model: GPT) -> GPT:
        """`model` with the weights of the step whose selection-set reply NLL was lowest."""
        model.load_state_dict(self.best_state)
        return model


@dataclass
class SampledReply:
    prompt: str
    text: str  # decoded, without the end-of-text
    ended: bool  # closed by end-of-text within the budget, with no new speech begun before it
    tokens: int


@torch.no_grad()
def sample_replies(model: GPT, examples: Sequence[Example], sft_params: SftParams) -> list[SampledReply]:
    """One reply per example's prompt, sampled as sft_params say (one generator for the run; prompt by
    prompt, as their lengths differ)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(sft_params.seed)
    top_k, temperature = sft_params.top_k or None, sft_params.temperature
    replies = []
    with eval_mode(model):
        for example in examples:
            prompt = torch.as_tensor([example.prompt], device=device)
            room = min(sft_params.max_new_tokens, model.config.block_size - len(example.prompt))
            ids = generate(model, prompt, room, temperature, top_k, eot_id=EOT_ID, generator=generator)
            new = ids[0, len(example.prompt):].tolist()
            closed = EOT_ID in new
            text = decode(new[: new.index(EOT_ID)] if closed else new)
            replies.append(SampledReply(decode(example.prompt), text, closed and not runs_on(text),
                                        len(new) - int(closed)))
    return replies


def runs_on(text: str) -> bool:
    """Whether a reply's text goes on into another speech (a blank line inside it, as tinygpt chat stops at)."""
    return TURN_SEPARATOR in text.strip("\n")


def ending_summary(replies: Sequence[SampledReply]) -> dict[str, float]:
    """How the sampled replies end: the share closed where a speech ends, and their mean length."""
    n = max(1, len(replies))
    ended = sum(r.ended for r in replies) / n
    return {"ended_share": ended, "ended_se": math.sqrt(ended * (1 - ended) / n),
            "ran_on_share": sum(runs_on(r.text) for r in replies) / n,
            "mean_tokens": sum(r.tokens for r in replies) / n, "samples": len(replies)}
