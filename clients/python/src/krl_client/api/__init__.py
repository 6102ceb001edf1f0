"""Generated protobuf and gRPC stubs of krl.allocator.v1 (scripts/gen_protos.sh; do not edit)."""
