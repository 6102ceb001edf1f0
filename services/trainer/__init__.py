"""The trainer: the GRPO loop over knapsack-allocated rollouts, its control API and run reports."""
