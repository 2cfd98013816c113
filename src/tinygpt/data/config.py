"""Params of the data stages (download, tokenize, split); torch-free.

Each class is a section of params.yaml: its comments say what the keys mean, and the defaults here are
its values (tests/pipeline/test_params.py checks that they agree)."""
from __future__ import annotations

from dataclasses import dataclass, field

from tinygpt.core.checks import fraction, one_of, positive, require


@dataclass
class DataParams:
    """params.yaml `data`: where the raw corpus comes from and the checksum that pins it."""

    url: str = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    sha256: str = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    mirrors: list[str] = field(default_factory=lambda: ["../shared/corpora/tinyshakespeare.txt"])
    timeout_s: float = 30.0

    def validate(self) -> None:
        require(bool(self.url.strip()), "data.url", "a URL (https, http, file) or a local path", self.url)
        is_hex = len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256.lower())
        require(is_hex, "data.sha256", "64 hexadecimal characters (sha256sum of the corpus)", self.sha256)
        for i, mirror in enumerate(self.mirrors):
            require(bool(mirror.strip()), f"data.mirrors[{i}]", "a URL or a local path", mirror)
        positive("data.timeout_s", self.timeout_s)


@dataclass
class TokenizeParams:
    """params.yaml `tokenize`: which tokenizer turns the corpus into ids."""

    encoding: str = "gpt2"

    def validate(self) -> None:
        one_of("tokenize.encoding", self.encoding, ("gpt2",))


@dataclass
class SplitParams:
    """params.yaml `split`: the contiguous train/val split, by characters, cut at a token boundary."""

    val_fraction: float = 0.1

    def validate(self) -> None:
        fraction("split.val_fraction", self.val_fraction)
