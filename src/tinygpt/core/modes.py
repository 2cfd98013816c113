"""A torch module's training/eval mode set for a block of code and restored after it: evaluation runs in
the middle of training (pretraining's fixed batches, RLHF's before/after scores), and training runs on
models that arrive in eval mode."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def training_mode(model: torch.nn.Module, training: bool) -> Iterator[None]:
    """`model` and all its submodules in training (True) or eval (False) mode inside the block; after it,
    every submodule has its own earlier mode back (a frozen part kept in eval mode stays so)."""
    before = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, was_training in before:  # parents first: each train() call is fixed by its children's
            module.train(was_training)


def eval_mode(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """Dropout off inside the block, the caller's modes restored after."""
    return training_mode(model, False)
