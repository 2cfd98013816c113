"""Looking inside the model's predictions: the top-k next tokens after a prompt, and sampled text."""
from __future__ import annotations

import json

import torch

from tinygpt.core.device import autocast
from tinygpt.core.modes import eval_mode
from tinygpt.data import tokenizer
from tinygpt.model.gpt import GPT
from tinygpt.model.sampling import generate


def prompt_ids(model: GPT, prompt: str, device: torch.device) -> torch.Tensor:
    """(1, seq) ids of the prompt, cropped to its last block_size tokens."""
    ids = tokenizer.encode(prompt)[-model.config.block_size :]
    return torch.tensor([ids], dtype=torch.long, device=device)


def next_tokens(model: GPT, prompt: str, top_k: int, device: torch.device, precision: str) -> dict:
    """The k most likely next tokens after `prompt`, with their probabilities (softmax in fp32)."""
    idx = prompt_ids(model, prompt, device)
    with eval_mode(model), torch.inference_mode(), autocast(device, precision):
        logits, _ = model(idx)
    probs = torch.softmax(logits[0, -1].float(), dim=-1)
    top = torch.topk(probs, min(top_k, probs.numel()))
    return {
        "prompt": prompt,
        "prompt_tokens": idx.size(1),
        "top": [
            {"rank": rank, "id": int(i), "token": tokenizer.decode([int(i)]), "probability": float(p)}
            for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1)
        ],
    }


def sample_completion(
    model: GPT, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
    seed: int, device: torch.device, precision: str,
) -> dict:
    """One continuation of `prompt` with the given decoding; the seed makes it repeatable."""
    idx = prompt_ids(model, prompt, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with eval_mode(model), torch.inference_mode(), autocast(device, precision):
        out = generate(model, idx, max_new_tokens, temperature, top_k, top_p, tokenizer.EOT_ID, generator)
    new_ids = out[0, idx.size(1) :].tolist()
    return {"prompt": prompt, "completion": tokenizer.decode(new_ids), "new_tokens": len(new_ids), "seed": seed}


def shown(token: str) -> str:
    """A token as a Markdown table cell: quoted so spaces and newlines are visible, pipes escaped."""
    return "`" + json.dumps(token, ensure_ascii=False).replace("|", "\\|").replace("`", "'") + "`"


def next_tokens_markdown(inspection: list[dict], title: str = "Next-token probabilities") -> str:
    lines = [f"# {title}", ""]
    for item in inspection:
        lines += [f"## {shown(item['prompt'])} ({item['prompt_tokens']} tokens)", "",
                  "| rank | token | id | probability |", "|---:|---|---:|---:|"]
        lines += [f"| {t['rank']} | {shown(t['token'])} | {t['id']} | {t['probability']:.4f} |" for t in item["top"]]
        lines.append("")
    return "\n".join(lines)


def samples_markdown(samples: list[dict], decoding: dict, title: str = "Samples") -> str:
    settings = ", ".join(f"{k}={v}" for k, v in decoding.items())
    lines = [f"# {title}", "", f"Decoding: {settings}", ""]
    for item in samples:
        lines += [f"## {shown(item['prompt'])}", "", "```text", item["prompt"] + item["completion"], "```", ""]
    return "\n".join(lines)
