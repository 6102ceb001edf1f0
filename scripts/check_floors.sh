#!/usr/bin/env bash
# The import floors (DESIGN.md; contracts in pyproject.toml [tool.importlinter]). import-linter
# reads packages from the file system, and ours are assembled by package-dir mappings
# (services/<name> and lab/<name> are krl.<name>), so the check runs on a copy laid out as installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/krl"
cp -r src/krl/. "$tree/krl/"
for s in allocator rollout trainer; do cp -r "services/$s" "$tree/krl/$s"; done
for s in cli up sim experiment tools; do cp -r "lab/$s" "$tree/krl/$s"; done
cp -r clients/python/src/krl_client "$tree/"
cd "$tree"
PYTHONPATH="$tree" "$root/.venv/bin/lint-imports" --config "$root/pyproject.toml" --no-cache
