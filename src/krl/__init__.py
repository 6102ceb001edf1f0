"""knapsack-rl: a rollout scheduler for RL of language models."""

__version__ = "0.1.0"
