"""Pretraining: the loop, optimizers and checkpoints."""
