#!/usr/bin/env bash
# Regenerates the Python stubs of every proto in proto/ into src/krl/api (the one home of
# generated code). protoc names modules after the proto path (krl.allocator.v1); they are
# moved under krl.api so that they never shadow the service packages (krl.allocator).
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/krl/api
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protos=$(cd proto && find krl -name '*.proto' | sort)
(cd proto && python -m grpc_tools.protoc -I . --python_out="$tmp" --pyi_out="$tmp" \
  --grpc_python_out="$tmp" $protos)
find "$out" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
cp -r "$tmp"/krl/. "$out"/
find "$out" -mindepth 1 -type d -exec sh -c 'touch "$1/__init__.py"' _ {} \;
find "$out" \( -name '*.py' -o -name '*.pyi' \) -exec \
  sed -i -E 's/^from krl\.(allocator|rollout|trainer)\.v1 import/from krl.api.\1.v1 import/' {} +
echo "generated stubs for: $protos"
