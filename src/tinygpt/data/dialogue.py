"""Conversations in a play script, and the chat template that supervised finetuning and `tinygpt chat` share.

A play script is already dialogue: speeches separated by blank lines, each opened by its speaker's name on a
line of its own. A pair is one speech and the next speaker's reply. The template writes turns exactly as the
corpus does, so the pretrained model knows its shape from the start, and closes a reply with end-of-text,
which the corpus never contains: that token is what finetuning teaches, so a chat knows where the model's
turn ends. One exchange, as the model reads it:

    ROMEO:
    <the speech>

    JULIET:
    <the reply><|endoftext|>

Everything before the reply (the speeches, the separators and the replier's name) is the prompt; the reply and
its end-of-text are what the loss covers.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinygpt.core.errors import TinyGptError
from tinygpt.data.tokenizer import ENDOFTEXT, EOT_ID, decode, encode

TURN_SEPARATOR = "\n\n"  # the corpus separates speeches by one blank line
# A speech: the speaker's name alone on its first line (no colon or line break in it), then its text.
SPEECH = re.compile(r"([^\n:]+):\n(\S.*)", re.S)


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


@dataclass(frozen=True)
class Example:
    """One reply in context, as token ids: the loss covers `reply` (which ends with end-of-text) only."""

    prompt: list[int]
    reply: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.reply


def format_turn(turn: Turn) -> str:
    return f"{turn.speaker}:\n{turn.text}"


def prompt_text(history: Sequence[Turn], replier: str) -> str:
    """The text the model continues: every turn of `history`, then the replier's name opening its turn."""
    return "".join(format_turn(turn) + TURN_SEPARATOR for turn in history) + f"{replier}:\n"


def encode_example(history: Sequence[Turn], reply: Turn) -> Example:
    """Prompt and reply encoded apart, as a chat encodes them: the prompt ends in a line break, after which
    GPT-2's tokenizer never merges, so the ids are the ones the whole text would get."""
    return Example(encode(prompt_text(history, reply.speaker)), encode(reply.text) + [EOT_ID])


def parse_speeches(text: str) -> list[Turn | None]:
    """The speeches of `text` in order; None where a block is not a speech (a name with no text, a speech cut
    by the split's boundary), so that no pair spans it."""
    turns: list[Turn | None] = []
    for block in text.split(TURN_SEPARATOR):
        match = SPEECH.fullmatch(block.strip("\n"))
        turns.append(Turn(match.group(1).strip(), match.group(2).rstrip()) if match else None)
    return turns


def reply_pairs(text: str) -> list[tuple[Turn, Turn]]:
    """(speech, reply) for every two consecutive speeches of `text` by different speakers, within one
    document (a corpus of several has end-of-text between them)."""
    pairs = []
    for document in text.split(ENDOFTEXT):
        turns = parse_speeches(document)
        pairs += [(a, b) for a, b in zip(turns, turns[1:])
                  if a is not None and b is not None and a.speaker != b.speaker]
    return pairs


def dialogue_examples(text: str, max_tokens: int) -> tuple[list[Example], int]:
    """The encoded pairs of `text` whose prompt and reply fit in `max_tokens` ids (a model reads max_tokens - 1
    of them to predict the rest), and how many pairs did not fit. A reply is never cut: the model must see
    where a speech ends."""
    examples = [encode_example([speech], reply) for speech, reply in reply_pairs(text)]
    kept = [e for e in examples if len(e.ids) <= max_tokens]
    return kept, len(examples) - len(kept)


class DialogueDataError(TinyGptError):
    pass


@dataclass
class DialogueData:
    """The train split's pairs, and the val split's dealt at random into a selection half (steps and settings
    are chosen on it) and a report half (the headline numbers)."""

    train: list[Example]
    held_out: dict[str, list[Example]]
    dropped: dict[str, int]  # pairs longer than the context, per split

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), **{k: len(v) for k, v in self.held_out.items()},
                **{f"{k}_too_long": v for k, v in self.dropped.items()}}


def dialogue_data(train_tokens: np.ndarray, val_tokens: np.ndarray, max_tokens: int, seed: int) -> DialogueData:
    """The pairs of both splits (their token files decoded: the tokenizer round-trips the text exactly)."""
    train, train_dropped = dialogue_examples(decode(train_tokens.tolist()), max_tokens)
    val, val_dropped = dialogue_examples(decode(val_tokens.tolist()), max_tokens)
    for name, examples in (("train", train), ("val", val)):
        if len(examples) < (1 if name == "train" else 2):
            raise DialogueDataError(
                f"the {name} split has {len(examples)} dialogue pairs that fit in {max_tokens} tokens; the sft stage "
                "needs a play script: speeches separated by blank lines, each opening with its speaker's name "
                "alone on a line ending in ':' (as Tiny Shakespeare), or a larger model.block_size")
    order = np.random.default_rng(seed).permutation(len(val))
    half = len(val) // 2
    return DialogueData(train, {"selection": [val[i] for i in order[:half]], "report": [val[i] for i in order[half:]]},
                        {"train": train_dropped, "val": val_dropped})
