"""Policy models shared by the rollout service and the trainer: the tiny from-scratch Qwen2-style
model and its character tokenizer (no download), local HF model directories, and the weight
format the trainer pushes to the rollout service. Imports torch; the allocator never imports it."""
