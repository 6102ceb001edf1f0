#!/usr/bin/env bash
# Regenerates the Python stubs of every proto in proto/. The allocator's go to the slim client
# (clients/python/src/krl_client/api), which the server imports too, so that one copy exists;
# the rollout's and trainer's to src/krl/api. protoc names modules after the proto path
# (krl.allocator.v1); they are moved so that they never shadow the service packages.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/krl/api
client=clients/python/src/krl_client/api
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protos=$(cd proto && find krl -name '*.proto' | sort)
(cd proto && python -m grpc_tools.protoc -I . --python_out="$tmp" --pyi_out="$tmp" \
  --grpc_python_out="$tmp" $protos)
find "$out" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
rm -f "$client"/allocator_pb2*
mv "$tmp"/krl/allocator/v1/allocator_pb2* "$client"/
rm -rf "$tmp"/krl/allocator
cp -r "$tmp"/krl/. "$out"/
find "$out" -mindepth 1 -type d -exec sh -c 'touch "$1/__init__.py"' _ {} \;
find "$out" \( -name '*.py' -o -name '*.pyi' \) -exec \
  sed -i -E 's/^from krl\.(rollout|trainer)\.v1 import/from krl.api.\1.v1 import/' {} +
sed -i -E 's/^from krl\.allocator\.v1 import/from krl_client.api import/' "$client"/allocator_pb2*
echo "generated stubs for: $protos"
