"""A module's training/eval mode is set for a block and every submodule's own mode restored after it."""
import pytest
import torch

from tinygpt.core.modes import eval_mode, training_mode


def mixed() -> torch.nn.Module:
    """A training model holding a frozen part in eval mode (the RLHF reference, a loaded trunk)."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(0.5)))
    model.train()
    model[1].eval()
    return model


def modes(model: torch.nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_turns_dropout_off_and_restores_every_submodule():
    model = mixed()
    before = modes(model)
    with eval_mode(model):
        assert not any(modes(model))
    assert modes(model) == before == [True, True, False, False]


def test_training_mode_restores_on_error():
    model = mixed()
    with pytest.raises(RuntimeError):
        with training_mode(model, True):
            assert all(modes(model))
            raise RuntimeError
    assert modes(model) == [True, True, False, False]
