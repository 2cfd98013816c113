import numpy as np
import pytest

from tinygpt.core.errors import TinyGptError
from tinygpt.data import tokenizer
from tinygpt.data.tokens import (read_corpus, read_offsets, read_tokens,
                                 split_tokens, tokenize_text, write_offsets,
                                 write_tokens)


def test_offsets_count_bytes_and_characters():
    text = "héllo wörld — ok"
    corpus = tokenize_text(text, tokenizer.gpt2_encoding())
    assert corpus.n_chars == len(text) and corpus.n_bytes == len(text.encode())
    assert corpus.byte_offsets[0] == 0 and corpus.byte_offsets[-1] == corpus.n_bytes
    assert corpus.char_offsets[-1] == corpus.n_chars
    assert np.all(np.diff(corpus.byte_offsets) > 0)
    # Every boundary that falls on a character boundary decodes to the matching text prefix.
    enc = tokenizer.gpt2_encoding()
    for i in range(len(corpus.tokens) + 1):
        prefix = enc.decode_bytes(corpus.tokens[:i].tolist())
        assert len(prefix) == corpus.byte_offsets[i]
        try:
            assert len(prefix.decode("utf-8")) == corpus.char_offsets[i]
        except UnicodeDecodeError:
            pass  # a token split a multi-byte character; its char offset counts the started character


def test_split_cuts_at_nearest_boundary():
    text = "aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj"
    corpus = tokenize_text(text, tokenizer.gpt2_encoding())
    train, val, cut = split_tokens(corpus.tokens, corpus.byte_offsets, corpus.char_offsets, 0.2)
    target = int(len(text) * 0.8)
    distances = np.abs(corpus.char_offsets[1:-1] - target)
    assert abs(corpus.char_offsets[cut] - target) == distances.min()
    assert len(train.tokens) + len(val.tokens) == len(corpus.tokens)
    assert train.n_chars + val.n_chars == len(text)
    assert tokenizer.decode(train.tokens.tolist()) + tokenizer.decode(val.tokens.tolist()) == text


def test_split_of_the_real_corpus_matches_nanogpt(shakespeare_path):
    corpus = tokenize_text(shakespeare_path.read_text(), tokenizer.gpt2_encoding())
    assert len(corpus.tokens) == 338_025
    train, val, _ = split_tokens(corpus.tokens, corpus.byte_offsets, corpus.char_offsets, 0.1)
    assert (len(train.tokens), len(val.tokens)) == (301_966, 36_059)
    assert train.n_chars + val.n_chars == 1_115_394
    assert val.n_bytes == 111_540


def test_split_needs_two_tokens():
    corpus = tokenize_text("a", tokenizer.gpt2_encoding())
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        split_tokens(corpus.tokens, corpus.byte_offsets, corpus.char_offsets, 0.1)


def test_token_and_offset_files_round_trip(tmp_path):
    corpus = tokenize_text("To be, or not to be", tokenizer.gpt2_encoding())
    write_tokens(tmp_path / "t.bin", corpus.tokens)
    write_offsets(tmp_path / "o.npy", corpus.byte_offsets, corpus.char_offsets)
    assert np.array_equal(read_tokens(tmp_path / "t.bin"), corpus.tokens)
    byte_offsets, char_offsets = read_offsets(tmp_path / "o.npy")
    assert np.array_equal(byte_offsets, corpus.byte_offsets) and np.array_equal(char_offsets, corpus.char_offsets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npy", "t.bin"]  # no temp files left


def test_read_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro download"):
        read_corpus(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(TinyGptError, match="empty"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(TinyGptError, match="not UTF-8"):
        read_corpus(tmp_path / "bin.txt")
