"""The rollout service: generates each prompt's group of n completions on an engine (hf, vllm,
openai), scores them with a verifiable reward, and streams finished groups back."""
