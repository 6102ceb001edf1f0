"""The allocator's maths (pure, no I/O): value models and objectives on a grid of p, the
namespace prior and each prompt's posterior, and the exact solver."""
