"""What the sft stage writes besides the model: its curves, the held-out reply NLL per evaluation, and the
sampled replies before and after."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tinygpt.core import io
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.curves import write_curves
from tinygpt.rlhf.sft import SampledReply

CURVES = ["loss", "lr", "grad_norm", "reply_tokens"]


def samples_markdown(before: Sequence[SampledReply], after: Sequence[SampledReply]) -> str:
    """One section per prompt: the prompt, the pretrained model's reply and the finetuned one's, and whether
    each closed where a speech ends."""
    lines = ["# Replies to report-set prompts: pretrained, then finetuned", "",
             "Sampled as `tinygpt chat` samples by default (params `sft`); *ended*: closed by end-of-text with no "
             "new speech begun.", ""]
    for i, (b, a) in enumerate(zip(before, after), 1):
        lines += [f"## {i}", "", "```", b.prompt.rstrip("\n"), "```", ""]
        for label, reply in (("pretrained", b), ("sft", a)):
            lines += [f"**{label}** ({reply.tokens} tokens, {'ended' if reply.ended else 'did not end'}):", "",
                      "```", reply.text.strip("\n") or "(empty)", "```", ""]
    return "\n".join(lines)


def write_outputs(history: list[dict], curve: list[dict], before: Sequence[SampledReply],
                  after: Sequence[SampledReply]) -> list[Path]:
    write_curves(history, paths.SFT_STEPS_CSV, paths.SFT_STEPS_PNG, CURVES, "SFT: reply loss")
    io.write_text(paths.SFT_HELDOUT_CSV, pd.DataFrame(curve).to_csv(index=False, float_format="%.6g"))
    io.write_text(paths.SFT_SAMPLES_MD, samples_markdown(before, after))
    return [paths.SFT_PLOTS, paths.SFT_REPORTS]
