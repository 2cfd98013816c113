"""`tinygpt chat`: a conversation in the terminal, the user speaking as one character and a language model
replying as another, in the chat template that supervised finetuning trains (tinygpt.data.dialogue).

A reply ends at end-of-text, which a finetuned model emits; a model that was not finetuned never does, so a
reply also ends where the text opens a new speech (a blank line), or after --max-tokens. The conversation is
kept within the model's context by dropping its oldest turns.

Left out on purpose: line editing beyond the terminal's own, saving or loading a conversation, and a second
sampler (replies are drawn by tinygpt.model.sampling, as `tinygpt generate` draws).
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TextIO

from tinygpt.core.errors import TinyGptError
from tinygpt.data import tokenizer
from tinygpt.data.dialogue import TURN_SEPARATOR, Turn, prompt_text
from tinygpt.model.gpt import GPT
from tinygpt.pipeline.streaming import Decoding, load_for_text, new_generator, sampled_text

QUIT = "/quit"
RESET = "/reset"


def check_name(name: str, option: str) -> None:
    """A speaker's name opens its speech on a line of its own, before a colon: it cannot hold either."""
    if not name.strip() or ":" in name or "\n" in name or "\r" in name:
        raise TinyGptError(f"{option} {name!r} is invalid; a speaker's name is one line of text without ':' "
                           "(e.g. ROMEO)")


def context_room(model: GPT, max_tokens: int, user: str, replier: str) -> int:
    """How many tokens of the conversation the model reads before a reply of `max_tokens`; at least one
    exchange, a one-word line and the replier's name, must fit."""
    block_size = model.config.block_size
    if max_tokens >= block_size:
        raise TinyGptError(f"--max-tokens {max_tokens} leaves no room for the conversation: the model reads at "
                           f"most block_size = {block_size} tokens, reply included; give --max-tokens "
                           f"{block_size // 4} or so")
    room = block_size - max_tokens
    smallest = len(tokenizer.encode(prompt_text([Turn(user, "Hi")], replier)))
    if smallest > room:
        raise TinyGptError(f"--max-tokens {max_tokens} leaves {room} of block_size = {block_size} tokens for the "
                           f"conversation, but one line between {user} and {replier} takes {smallest}; give "
                           f"--max-tokens {block_size - smallest} or less")
    return room


def keep_last_tokens(turn: Turn, replier: str, room: int) -> Turn:
    """`turn` with only as many of its text's last tokens as let it and the replier's name fit in `room`."""
    text_ids = tokenizer.encode(turn.text)
    excess = len(tokenizer.encode(prompt_text([turn], replier))) - room
    while excess > 0 and text_ids:  # decoding a cut text and encoding it again may not give the same count
        text_ids = text_ids[excess:]
        turn = Turn(turn.speaker, tokenizer.decode(text_ids).lstrip().lstrip("\ufffd"))
        excess = len(tokenizer.encode(prompt_text([turn], replier))) - room
    return turn


def fit_history(history: list[Turn], replier: str, room: int) -> list[Turn]:
    """The newest turns of `history` whose prompt fits in `room` tokens: the oldest go first, and a last turn
    too long on its own keeps its last tokens."""
    kept = list(history)
    while len(kept) > 1 and len(tokenizer.encode(prompt_text(kept, replier))) > room:
        kept.pop(0)
    if kept and len(tokenizer.encode(prompt_text(kept, replier))) > room:
        kept[-1] = keep_last_tokens(kept[-1], replier, room)
    return kept


def until_blank_line(pieces: Iterable[str]) -> Iterator[str]:
    """The pieces of a reply up to the blank line that would open the next speech, which is never yielded:
    a piece that ends in a line break is held back until the next one shows whether a second follows."""
    held = ""
    for piece in pieces:
        text = held + piece
        end = text.find(TURN_SEPARATOR)
        if end >= 0:
            if end:
                yield text[:end]
            return
        held = "\n" if text.endswith("\n") else ""
        if len(text) > len(held):
            yield text[: len(text) - len(held)]


class Chat:
    """One conversation with a loaded model: its history, kept within the context, and the one seeded
    generator every reply is drawn from, so that a session is reproducible."""

    def __init__(self, model: GPT, decoding: Decoding, user: str = "ROMEO", replier: str = "JULIET"):
        self.model, self.decoding, self.user, self.replier = model, decoding, user, replier
        self.room = context_room(model, decoding.max_tokens, user, replier)
        self.generator = new_generator(model, decoding.seed)
        self.history: list[Turn] = []
        self.told_of_dropped_turns = False

    def reset(self) -> None:
        self.history = []

    def prompt_ids(self) -> list[int]:
        """The ids of the prompt for the next reply, the history first cut to fit the context."""
        kept = fit_history(self.history, self.replier, self.room)
        if len(kept) < len(self.history) and not self.told_of_dropped_turns:
            print(f"(the conversation outgrew the model's context of {self.model.config.block_size} tokens: "
                  "its oldest turns are dropped from now on)", file=sys.stderr)
            self.told_of_dropped_turns = True
        if kept and kept[-1] != self.history[-1]:
            print(f"(your line does not fit in the model's context of {self.model.config.block_size} tokens "
                  f"with a reply of {self.decoding.max_tokens}: it reads only the line's end)", file=sys.stderr)
        self.history = kept
        return tokenizer.encode(prompt_text(kept, self.replier))

    def reply(self, line: str, out: TextIO) -> str:
        """Answer the user's `line`: stream the reply to `out`, a flushed piece per token, and keep both."""
        self.history.append(Turn(self.user, line))
        ids = self.prompt_ids()
        write(out, f"{self.replier}: ")
        pieces = []
        for piece in until_blank_line(sampled_text(self.model, ids, self.decoding, self.generator)):
            write(out, piece)
            pieces.append(piece)
        write(out, "\n")
        text = "".join(pieces).strip()
        self.history.append(Turn(self.replier, text))
        return text


def write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()  # a terminal shows each token as it arrives, and the prompt before the user types


def converse(chat: Chat, lines: TextIO, out: TextIO) -> None:
    """Prompt for and answer the user's lines until end of input or /quit; /reset starts a new conversation,
    an empty line is ignored."""
    while True:
        write(out, f"{chat.user}> ")
        line = lines.readline()
        if not line:  # end of input (Ctrl-D): the shell's prompt goes on a line of its own
            write(out, "\n")
            return
        line = line.strip()
        if line == QUIT:
            return
        if line == RESET:
            chat.reset()
        elif line:
            chat.reply(line, out)


def talk(model: str, decoding: Decoding, user: str = "ROMEO", replier: str = "JULIET", device: str = "auto",
         lines: TextIO | None = None, out: TextIO | None = None) -> None:
    """Talk with MODEL (a directory or an MLflow URI) on stdin and stdout, as `user` to `replier`."""
    decoding.validate()
    check_name(user, "--as")
    check_name(replier, "--reply-as")
    gpt, _ = load_for_text(model, device)
    try:
        converse(Chat(gpt, decoding, user, replier), lines or sys.stdin, out or sys.stdout)
    except KeyboardInterrupt:  # Ctrl-C ends a conversation as /quit does, without a traceback
        write(out or sys.stdout, "\n")
