"""Dialogue pairs from a play script: speeches parsed, pairs only across a change of speaker and never across a
broken block or a document boundary, the template's ids equal the whole text's, and too-long pairs dropped."""
from __future__ import annotations

import numpy as np
import pytest

from tinygpt.data import dialogue
from tinygpt.data.dialogue import Turn, dialogue_data, dialogue_examples, encode_example, prompt_text, reply_pairs
from tinygpt.data.tokenizer import ENDOFTEXT, EOT_ID, encode

SCENE = """ROMEO:
But, soft! what light through yonder window breaks?

JULIET:
Ay me!

ROMEO:
She speaks:
O, speak again, bright angel!

ROMEO:
A second speech by the same speaker.

NURSE:

JULIET:
Romeo, doff thy name.

First Citizen:
Speak, speak."""


def test_speeches_and_pairs():
    turns = dialogue.parse_speeches(SCENE)
    assert turns[0] == Turn("ROMEO", "But, soft! what light through yonder window breaks?")
    assert turns[2] == Turn("ROMEO", "She speaks:\nO, speak again, bright angel!")  # a colon inside the text
    assert turns[4] is None  # a name with no speech breaks the conversation
    pairs = reply_pairs(SCENE)
    assert [(a.speaker, b.speaker) for a, b in pairs] == [("ROMEO", "JULIET"), ("JULIET", "ROMEO"),
                                                         ("JULIET", "First Citizen")]


def test_no_pair_spans_a_document_boundary():
    text = "ROMEO:\nHello.\n" + ENDOFTEXT + "JULIET:\nGoodbye.\n\nROMEO:\nFarewell."
    assert [(a.text, b.text) for a, b in reply_pairs(text)] == [("Goodbye.", "Farewell.")]


def test_the_template_and_its_ids_are_the_whole_texts():
    speech, reply = Turn("ROMEO", "But, soft!"), Turn("JULIET", "Ay me!")
    assert prompt_text([speech], "JULIET") == "ROMEO:\nBut, soft!\n\nJULIET:\n"
    example = encode_example([speech], reply)
    assert example.reply[-1] == EOT_ID
    # apart or together, the tokenizer gives the same ids: a chat's prompt is encoded as training saw it
    assert example.ids == encode("ROMEO:\nBut, soft!\n\nJULIET:\nAy me!") + [EOT_ID]
    assert example.prompt == encode("ROMEO:\nBut, soft!\n\nJULIET:\n")


def test_pairs_longer_than_the_context_are_dropped_not_cut():
    kept, dropped = dialogue_examples(SCENE, max_tokens=20)
    assert dropped == 3 - len(kept) and all(len(e.ids) <= 20 for e in kept)
    everything, none_dropped = dialogue_examples(SCENE, max_tokens=1000)
    assert none_dropped == 0 and len(everything) == 3


def test_val_pairs_are_dealt_into_two_disjoint_halves():
    tokens = np.asarray(encode(SCENE + "\n\n" + SCENE), dtype=np.uint16)  # 3 + 1 (across the join) + 3 pairs
    data = dialogue_data(tokens, tokens, 1000, seed=3)
    selection, report = data.held_out["selection"], data.held_out["report"]
    assert len(data.train) == 7 and len(selection) == 3 and len(report) == 4
    ids = lambda examples: sorted(tuple(e.ids) for e in examples)  # noqa: E731
    assert ids(selection + report) == ids(data.train)  # every val pair in exactly one half
    assert data.counts() == {"train": 7, "selection": 3, "report": 4, "train_too_long": 0, "val_too_long": 0}


def test_a_corpus_without_dialogue_is_a_clear_error():
    tokens = np.asarray(encode("Just prose, no speeches at all.\n\nMore prose."), dtype=np.uint16)
    with pytest.raises(dialogue.DialogueDataError, match="speaker's name"):
        dialogue_data(tokens, tokens, 128, seed=0)
