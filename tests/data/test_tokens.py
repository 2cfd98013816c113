import numpy as np
import pytest

from tinygpt.data import tokenizer
from tinygpt.data.tokens import (read_offsets, read_tokens, split_documents,
                                 split_tokens, token_dtype, write_tokens)
from support import tokenize_text


def test_offsets_count_bytes_and_characters():
    text = "héllo wörld — ok"
    corpus = tokenize_text(text)
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
    corpus = tokenize_text(text)
    train, val, cut = split_tokens(corpus.tokens, corpus.byte_offsets, corpus.char_offsets, 0.2)
    target = int(len(text) * 0.8)
    distances = np.abs(corpus.char_offsets[1:-1] - target)
    assert abs(corpus.char_offsets[cut] - target) == distances.min()
    assert len(train.tokens) + len(val.tokens) == len(corpus.tokens)
    assert train.n_chars + val.n_chars == len(text)
    assert tokenizer.decode(train.tokens.tolist()) + tokenizer.decode(val.tokens.tolist()) == text


def test_split_of_the_real_corpus_matches_nanogpt(shakespeare_path):
    corpus = tokenize_text(shakespeare_path.read_text())
    assert len(corpus.tokens) == 338_025
    train, val, _ = split_tokens(corpus.tokens, corpus.byte_offsets, corpus.char_offsets, 0.1)
    assert (len(train.tokens), len(val.tokens)) == (301_966, 36_059)
    assert train.n_chars + val.n_chars == 1_115_394
    assert val.n_bytes == 111_540


def test_split_needs_two_tokens():
    corpus = tokenize_text("a")
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        split_tokens(corpus.tokens, corpus.byte_offsets, corpus.char_offsets, 0.1)


def test_token_files_round_trip(tmp_path):
    corpus = tokenize_text("To be, or not to be")
    write_tokens(tmp_path / "t.bin", corpus.tokens)
    assert np.array_equal(read_tokens(tmp_path / "t.bin"), corpus.tokens)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]  # no temp files left
    assert read_offsets(corpus.files.offsets)[0].tolist() == corpus.byte_offsets.tolist()


def test_token_dtype_widens_only_past_uint16():
    assert token_dtype(50257) is np.uint16 and token_dtype(1 << 16) is np.uint16
    assert token_dtype((1 << 16) + 1) is np.uint32 and token_dtype(100_277) is np.uint32


DOCS = ["First document, short.\n", "The second one is a little longer than the first.\n",
        "Third.\n", "And a fourth document closes the corpus, with some more words in it.\n"]


def test_split_by_documents_keeps_them_whole_and_is_seeded():
    corpus = tokenize_text(DOCS)
    args = (corpus.tokens, corpus.byte_offsets, corpus.char_offsets, corpus.documents)
    train, val, val_docs = split_documents(*args, val_fraction=0.3, seed=0)
    eot = tokenizer.EOT_ID
    pieces = [tokenizer.decode([t for t in part.tokens.tolist() if t != eot]) for part in (train, val)]
    val_text = "".join(DOCS[i] for i in val_docs)
    assert pieces[1] == val_text and pieces[0] == "".join(d for i, d in enumerate(DOCS) if i not in val_docs)
    assert train.n_chars + val.n_chars == sum(map(len, DOCS)) and val.n_chars == len(val_text)
    assert len(train.tokens) + len(val.tokens) == len(corpus.tokens)
    assert int((val.tokens == eot).sum()) == len(val_docs)  # each document keeps its end-of-text
    assert split_documents(*args, val_fraction=0.3, seed=0)[2] == val_docs
    assert {tuple(split_documents(*args, val_fraction=0.3, seed=s)[2]) for s in range(20)} != {tuple(val_docs)}


def test_split_by_documents_never_empties_train():
    corpus = tokenize_text(DOCS[:2])
    train, val, val_docs = split_documents(corpus.tokens, corpus.byte_offsets, corpus.char_offsets,
                                           corpus.documents, val_fraction=0.99, seed=0)
    assert len(val_docs) == 1 and len(train.tokens) > 0
