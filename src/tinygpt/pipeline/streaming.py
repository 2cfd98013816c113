"""`tinygpt generate`: a prompt continued by any language model directory, streamed to stdout as the
tokens are sampled. `tinygpt chat` (chat.py) loads and samples through the same functions."""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import torch

from tinygpt.core.device import resolve_device
from tinygpt.core.errors import TinyGptError
from tinygpt.data import tokenizer
from tinygpt.model.gpt import GPT
from tinygpt.model.loading import load_language_model
from tinygpt.model.sampling import stream
from tinygpt.pipeline.model_uri import model_dir


@dataclass
class Decoding:
    max_tokens: int = 100
    temperature: float = 0.8  # 0 is greedy
    top_k: int | None = 200
    top_p: float | None = None
    seed: int = 1337
    stop_at_eot: bool = True

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise TinyGptError(f"--max-tokens {self.max_tokens} is invalid; allowed: an integer >= 1")
        if self.temperature < 0:
            raise TinyGptError(f"--temperature {self.temperature} is invalid; allowed: >= 0 (0 is greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise TinyGptError(f"--top-k {self.top_k} is invalid; allowed: an integer >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise TinyGptError(f"--top-p {self.top_p} is invalid; allowed: a probability in (0, 1]")


def read_prompt(prompt: str | None, prompt_file: str | None, stdin: TextIO) -> str:
    """PROMPT, the --prompt-file's text, or stdin when PROMPT is '-'; none of them is the empty prompt."""
    if prompt is not None and prompt_file is not None:
        raise TinyGptError("give PROMPT or --prompt-file, not both")
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise TinyGptError(f"--prompt-file {path}: not found")
        return path.read_text(encoding="utf-8")
    if prompt == "-":
        return stdin.read()
    return prompt or ""


def check_vocabulary(model: GPT, directory: Path) -> None:
    """The GPT-2 tokenizer's ids are the model's rows, or the prompt and samples cannot be translated."""
    if model.config.vocab_size != tokenizer.N_VOCAB:
        raise TinyGptError(f"{directory}: vocab_size is {model.config.vocab_size}, not the GPT-2 tokenizer's "
                           f"{tokenizer.N_VOCAB}; `tinygpt generate` and `chat` encode and decode with that tokenizer")


def check_prompt_fits(ids: list[int], model: GPT, directory: Path) -> None:
    """A prompt longer than the context would be cut silently, and the model would continue text it never saw."""
    if len(ids) > model.config.block_size:
        raise TinyGptError(f"the prompt is {len(ids)} tokens but {directory} reads at most block_size = "
                           f"{model.config.block_size} tokens; shorten the prompt to its last "
                           f"{model.config.block_size} tokens or less")


def continuation(model: GPT, prompt: str, decoding: Decoding, directory: Path = Path("MODEL")) -> Iterator[str]:
    """The continuation's text, a piece per sampled token (held back while a character is incomplete)."""
    ids = tokenizer.encode(prompt) or [tokenizer.EOT_ID]  # an empty prompt: a fresh document, as GPT-2 saw them
    check_prompt_fits(ids, model, directory)
    return sampled_text(model, ids, decoding, new_generator(model, decoding.seed))


def new_generator(model: GPT, seed: int) -> torch.Generator:
    return torch.Generator(device=model.transformer.wte.weight.device).manual_seed(seed)


def sampled_text(model: GPT, ids: list[int], decoding: Decoding, generator: torch.Generator) -> Iterator[str]:
    """The text sampled after `ids`, a piece per token; `generator` is the caller's, so that a chat draws
    every reply from one seeded stream."""
    eot = tokenizer.EOT_ID if decoding.stop_at_eot else None
    tokens = stream(model, ids, decoding.max_tokens, decoding.temperature, decoding.top_k, decoding.top_p,
                    generator, eot)
    if decoding.stop_at_eot:
        tokens = itertools.takewhile(lambda t: t != eot, tokens)  # the end-of-text marker is not text
    return tokenizer.decode_stream(tokens)


def load_for_text(model: str, device: str = "auto") -> tuple[GPT, Path]:
    """MODEL (a directory or an MLflow URI) as a GPT that reads and writes the GPT-2 tokenizer's ids, and its
    local directory, for the messages that name it."""
    directory = model_dir(model)
    gpt = load_language_model(directory, resolve_device(device))
    check_vocabulary(gpt, directory)
    return gpt, directory


def write_continuation(model: str, prompt: str, decoding: Decoding, device: str = "auto",
                       out: TextIO | None = None) -> None:
    """Write MODEL's continuation of `prompt` to `out` (stdout), flushing every piece, then a newline."""
    decoding.validate()
    gpt, directory = load_for_text(model, device)
    out = out or sys.stdout
    for piece in continuation(gpt, prompt, decoding, directory):
        out.write(piece)
        out.flush()  # a terminal or pipe shows each token as it arrives, not the whole text at the end
    out.write("\n")
    out.flush()
