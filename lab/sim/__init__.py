"""The rollout-allocation simulator (`krl simulate`, `krl experiment --backend sim`): a population
of prompts with latent success probabilities, Bernoulli rewards, a documented learning model, and
the real allocator code deciding n per prompt. See docs/SIMULATOR.md."""
