"""The allocator service: exact knapsack allocation of rollouts over Redis-backed histories."""
