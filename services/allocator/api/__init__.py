"""The allocator's adapters: gRPC and HTTP over the one use case (service.Allocator)."""
