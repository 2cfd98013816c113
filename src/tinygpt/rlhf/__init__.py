"""RLHF: oracles, preference pairs, the reward model, rollouts, PPO and the held-out evaluation."""
