import hashlib
from pathlib import Path

import numpy as np
import pytest
import tiktoken_ext.openai_public

from tinygpt.data import tokenizer
from tinygpt.data.tokenizer import TokenizerFilesError


def test_known_ids():
    enc = tokenizer.gpt2_encoding()
    assert enc.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert enc.encode("Hello, I am an language model,") == [15496, 11, 314, 716, 281, 3303, 2746, 11]


def test_vocab_and_end_of_text():
    enc = tokenizer.gpt2_encoding()
    assert enc.n_vocab == 50257
    assert enc.eot_token == 50256
    assert tokenizer.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert enc.name == "gpt2"


def test_pinned_hashes_are_tiktokens_own():
    source = Path(tiktoken_ext.openai_public.__file__).read_text()
    assert tokenizer.VOCAB_BPE_SHA256 in source
    assert tokenizer.ENCODER_JSON_SHA256 in source


def test_shipped_files_match_the_pins():
    files = tokenizer.bpe_files()
    assert hashlib.sha256(files.vocab_bpe.read_bytes()).hexdigest() == tokenizer.VOCAB_BPE_SHA256
    assert hashlib.sha256(files.encoder_json.read_bytes()).hexdigest() == tokenizer.ENCODER_JSON_SHA256


def test_tampered_file_is_rejected(tmp_path):
    original = tokenizer.bpe_files().vocab_bpe.read_bytes()
    tampered = tmp_path / "vocab.bpe"
    tampered.write_bytes(original + b"\n")
    with pytest.raises(TokenizerFilesError, match="vocab.bpe.*not GPT-2's.*reinstall"):
        tokenizer.verify_sha256(tampered, tokenizer.VOCAB_BPE_SHA256)
    with pytest.raises(TokenizerFilesError, match="missing"):
        tokenizer.verify_sha256(tmp_path / "absent.bpe", tokenizer.VOCAB_BPE_SHA256)


def test_round_trip_on_corpus(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    ids = tokenizer.gpt2_encoding().encode_ordinary(text)
    assert len(ids) == 338_025
    assert len(set(ids)) == 11_706
    assert tokenizer.decode(ids) == text


def test_round_trip_unicode():
    text = "naïve café — 日本語 🙂\n\tend"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_only_gpt2_offline():
    with pytest.raises(ValueError, match="tokenize.encoding"):
        tokenizer.get_encoding("cl100k_base")


def test_decode_stream_holds_a_character_back_until_its_last_byte():
    text = "🙂 日本語, naïve"
    ids = tokenizer.encode(text)
    assert "\ufffd" in tokenizer.decode(ids[:1])  # the emoji's bytes span several tokens
    # 11 tokens for 7 pieces: a piece ends where a character's last byte arrives, never in between
    assert list(tokenizer.decode_stream(ids)) == ["🙂", " ", "日", "本", "語", ",", " naïve"]


def test_decode_stream_joins_to_tiktokens_decode_on_random_ids():
    """Random ids include bytes that never complete a character: they become U+FFFD as in `decode`."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = rng.integers(0, tokenizer.N_VOCAB, size=30).tolist()
        assert "".join(tokenizer.decode_stream(ids)) == tokenizer.decode(ids)
