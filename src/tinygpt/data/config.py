"""Params of the data stages (download, tokenize, split); torch-free.

Each class is a section of params.yaml: its comments say what the keys mean, and the defaults here are
its values (tests/pipeline/test_params.py checks that they agree)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pathlib import PurePosixPath

from tinygpt.core.checks import fraction, non_negative, one_of, positive, require

SOURCES = ("url", "files", "hf")
# Local corpora (data.files, a local data.hf_path) must lie here: the download stage depends on this
# folder, so DVC reruns it when a file in it changes and a stale corpus cannot pass as fresh.
CORPUS_FOLDER = "data/corpus"


@dataclass
class DataParams:
    """params.yaml `data`: where the raw corpus comes from and what pins it."""

    source: str = "url"
    url: str = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    sha256: str = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    mirrors: list[str] = field(default_factory=lambda: ["../shared/corpora/tinyshakespeare.txt"])
    timeout_s: float = 30.0
    files: str = "data/corpus"
    hf_path: str = ""
    hf_config: str | None = None
    hf_split: str = "train"
    hf_revision: str | None = None
    text_column: str = "text"

    def validate(self) -> None:
        one_of("data.source", self.source, SOURCES)
        if self.source == "files":
            require(inside_corpus_folder(self.files), "data.files",
                    f"a folder or glob inside {CORPUS_FOLDER}/ (e.g. {CORPUS_FOLDER}/**/*.txt)", self.files)
        if self.source == "hf":
            require(bool(self.hf_path.strip()), "data.hf_path",
                    f"a Hugging Face hub id (e.g. karpathy/tiny_shakespeare) or a dataset folder in {CORPUS_FOLDER}/",
                    self.hf_path)
            require(bool(self.hf_split.strip()), "data.hf_split", "a split name such as train", self.hf_split)
            require(bool(self.text_column.strip()), "data.text_column", "the name of the text column",
                    self.text_column)
        require(bool(self.url.strip()), "data.url", "a URL (https, http, file) or a local path", self.url)
        is_hex = len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256.lower())
        require(is_hex, "data.sha256", "64 hexadecimal characters (sha256sum of the corpus)", self.sha256)
        for i, mirror in enumerate(self.mirrors):
            require(bool(mirror.strip()), f"data.mirrors[{i}]", "a URL or a local path", mirror)
        positive("data.timeout_s", self.timeout_s)


def inside_corpus_folder(path: str) -> bool:
    """Whether a relative path or glob names CORPUS_FOLDER or something below it."""
    parts = PurePosixPath(path.strip()).parts
    return ".." not in parts and parts[:2] == tuple(PurePosixPath(CORPUS_FOLDER).parts)


@dataclass
class TokenizeParams:
    """params.yaml `tokenize`: which tokenizer turns the corpus into ids."""

    encoding: str = "gpt2"
    threads: int = 0

    def validate(self) -> None:
        one_of("tokenize.encoding", self.encoding, ("gpt2",))
        non_negative("tokenize.threads", self.threads)


@dataclass
class SplitParams:
    """params.yaml `split`: train/val by characters; one document is cut at a token boundary, several
    are split by whole documents, drawn with `seed`."""

    val_fraction: float = 0.1
    seed: int = 1337

    def validate(self) -> None:
        fraction("split.val_fraction", self.val_fraction)
