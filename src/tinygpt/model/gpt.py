"""A GPT-2 decoder in PyTorch: token + position embeddings, pre-LayerNorm blocks of causal
self-attention and a 4x tanh-GELU MLP, a final LayerNorm and an LM head tied to the token embedding.

Module names follow GPT-2's checkpoints (transformer.wte, h.N.attn.c_attn, ...) so converting weights
to and from Hugging Face is a matter of transposing Conv1D matrices, not renaming.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.model.config import GPTConfig
from tinygpt.model.vocabulary import CompactVocabulary

TIED_HEAD = "lm_head.weight"  # the token embedding's tensor under a second name (weight tying)


class KVCache:
    """Each layer's keys and values (batch, head, pos, head_dim) for the `pos` positions already run, so
    decoding runs each new token through the transformer once instead of re-running the whole prefix.
    For eval mode: dropout would make the cached keys disagree with a fresh forward."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.pos = 0  # positions cached, i.e. the position of the next token


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v fused
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        # (batch, seq, width) -> (batch, head, seq, head_dim)
        q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        causal, mask = True, None  # without cached keys the call is causal within itself
        if cache is not None:
            if cache.pos:
                k = torch.cat([cache.keys[layer], k], dim=2)
                v = torch.cat([cache.values[layer], v], dim=2)
                # is_causal aligns its triangle to the top left, wrong once keys precede the queries: one
                # new query sees every key; several need new query i to see the cache and new keys <= i.
                causal = False
                if seq > 1:
                    mask = torch.ones(seq, k.size(2), dtype=torch.bool, device=x.device).tril(cache.pos)
            cache.keys[layer], cache.values[layer] = k, v
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(batch, seq, width)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 used the tanh approximation of GELU; matching it keeps HF parity exact.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


@dataclass
class ParamCounts:
    total: int  # every distinct parameter (the tied head counted once), as Hugging Face reports
    non_embedding: int  # without token and position embeddings

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "non_embedding": self.non_embedding}


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.logit_bias)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        # Which ids share an embedding row (saved beside the weights): set for a model pretrained over the
        # training vocabulary, whose compact output head is exact while the embedding stays frozen.
        self.vocabulary: CompactVocabulary | None = None
        self.apply(self._init_weights)
        # GPT-2: each residual branch's output projection is scaled down by 1/sqrt(2 * n_layer), since
        # 2 * n_layer branches add into the residual stream and its variance would otherwise grow.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def add_logit_bias(self) -> nn.Parameter:
        """The LM head's per-token logit bias, added at zero (the model's outputs do not change) if it has none.

        With the head tied to a 128-wide embedding, the blocks can raise one token's logit only by moving
        the hidden state toward its embedding row, which raises every token near it too; a bias moves that
        token alone, in every context. That is the shape of a reward that likes some words wherever they
        appear (docs/experiments.md, "DPO with a per-token logit bias").
        """
        if self.lm_head.bias is None:
            weight = self.lm_head.weight
            self.lm_head.bias = nn.Parameter(torch.zeros(weight.size(0), device=weight.device, dtype=weight.dtype))
            self.config = replace(self.config, logit_bias=True)
        return self.lm_head.bias

    def param_counts(self) -> ParamCounts:
        total = sum(p.numel() for p in self.parameters())  # parameters() yields the tied weight once
        embeddings = self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return ParamCounts(total=total, non_embedding=total - embeddings)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-LayerNorm output (batch, seq, n_embd): what the LM head, a reward or value head reads.

        With a `cache`, `idx` holds the tokens after the cached ones; their keys and values join the cache.
        """
        seq, start, context = idx.size(1), 0 if cache is None else cache.pos, self.config.block_size
        if cache is None and seq > context:
            raise ValueError(f"sequence of {seq} tokens exceeds the context of {context}")
        if cache is not None and start + seq > context:
            raise ValueError(f"{start} cached + {seq} new tokens exceed the context of {context}")
        if cache is not None and self.training and self.config.dropout > 0:
            raise ValueError("a KV cache needs eval mode: with dropout the cached keys are not reproducible")
        pos = torch.arange(start, start + seq, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.pos += seq
        return self.transformer.ln_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (batch, seq, vocab) and, given targets, the mean cross-entropy (-1 targets ignored).
        `cache`: see `hidden_states`."""
        logits = self.lm_head(self.hidden_states(idx, cache))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss
