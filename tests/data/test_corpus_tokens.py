"""The parallel, streamed tokenizer gives exactly the ids of one encode_ordinary call, whatever the
piece and batch sizes; documents get an end-of-text after each; a failure leaves no output."""
import numpy as np
import pytest
from support import tokenize_text

from tinygpt.core.errors import TinyGptError
from tinygpt.data import corpus_tokens, tokenizer
from tinygpt.data.corpus_tokens import TokenFiles, tokenize_corpus

TRICKY = ("Hello world\nNext line\n\nAfter a blank\n  indented\nx\ny\n'tis here\n1234\n5678\n"
          "tabs\t\nend\n\u00a0nbsp\nnaïve café\nso—dash\n   \n\n\nlast words") * 40


@pytest.mark.parametrize("piece_bytes", [7, 64, 1000])
def test_any_piece_size_gives_the_ids_of_one_encode(monkeypatch, piece_bytes):
    monkeypatch.setattr(corpus_tokens, "PIECE_BYTES", piece_bytes)
    monkeypatch.setattr(corpus_tokens, "LOOKAHEAD", 16)
    corpus = tokenize_text(TRICKY, chunk_bytes=300, threads=2)
    assert corpus.tokens.tolist() == tokenizer.gpt2_encoding().encode_ordinary(TRICKY)
    assert corpus.byte_offsets[-1] == len(TRICKY.encode()) and corpus.char_offsets[-1] == len(TRICKY)


def test_tiny_shakespeare_ids_are_unchanged(shakespeare_path, monkeypatch):
    text = shakespeare_path.read_text()
    monkeypatch.setattr(corpus_tokens, "PIECE_BYTES", 4096)  # ~270 pieces, a few hundred cuts checked
    corpus = tokenize_text(text, chunk_bytes=1 << 16, threads=2)
    assert len(corpus.tokens) == 338_025
    assert np.array_equal(corpus.tokens, np.asarray(tokenizer.gpt2_encoding().encode_ordinary(text)))
    assert corpus.tokens.dtype == np.uint16 and corpus.documents.tolist() == [0, 338_025]


def test_safe_cuts_sit_after_a_newline_between_printable_characters():
    raw = np.frombuffer(b"ab\n\ncd\n ef\ngh", dtype=np.uint8)
    assert corpus_tokens.safe_cut(raw, 0, len(raw)) == 11  # "\n\n" and "\n " are not safe, "f\ng" is
    assert corpus_tokens.safe_cut(raw, 12, len(raw)) is None


def test_documents_end_with_end_of_text_and_offsets_skip_it():
    docs = ["one two", "three\n", "four"]
    corpus = tokenize_text(docs)
    enc = tokenizer.gpt2_encoding()
    expected = []
    for d in docs:
        expected += enc.encode_ordinary(d) + [tokenizer.EOT_ID]
    assert corpus.tokens.tolist() == expected
    ends = corpus.documents[1:]
    assert corpus.documents[0] == 0 and ends[-1] == len(expected)
    assert all(corpus.tokens[e - 1] == tokenizer.EOT_ID for e in ends)
    starts_in_bytes = np.cumsum([0] + [len(d.encode()) for d in docs])
    assert corpus.byte_offsets[corpus.documents].tolist() == starts_in_bytes.tolist()
    assert corpus.byte_offsets[-1] == sum(len(d) for d in docs)


def test_a_document_index_that_disagrees_fails_and_writes_nothing(tmp_path):
    (tmp_path / "input.txt").write_text("some text")
    files = TokenFiles(tmp_path / "t.bin", tmp_path / "o.npy", tmp_path / "d.npy")
    with pytest.raises(TinyGptError, match="document index"):
        tokenize_corpus(tmp_path / "input.txt", np.array([0, 4]), tokenizer.gpt2_encoding(), files, progress=False)
    (tmp_path / "input.txt").write_bytes(b"ok \xff\xfe bad")
    with pytest.raises(TinyGptError, match="not UTF-8"):
        tokenize_corpus(tmp_path / "input.txt", np.array([0, 9]), tokenizer.gpt2_encoding(), files, progress=False)
    (tmp_path / "input.txt").write_bytes(b"")
    with pytest.raises(TinyGptError, match="empty"):
        tokenize_corpus(tmp_path / "input.txt", np.array([0, 0]), tokenizer.gpt2_encoding(), files, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]
