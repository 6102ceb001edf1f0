#!/usr/bin/env bash
# Offline checks of everything in deploy/ and the Dockerfiles, with the pinned tools of
# scripts/deploy_tools.sh. No Docker engine or cluster is needed. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deploy_tools.sh
export PATH=$PWD/.tools/bin:$PATH
step() { printf '\n== %s\n' "$*"; }

step "hadolint $(hadolint --version | awk '{print $NF}')"
hadolint services/allocator/Dockerfile services/rollout/Dockerfile services/rollout/Dockerfile.vllm \
  services/trainer/Dockerfile
echo "4 Dockerfiles clean"

step "docker compose config -q ($(docker-compose version --short))"
docker-compose config -q
docker-compose --profile gpu config -q
echo "docker-compose.yml valid, with and without the gpu profile"

step "promtool ($(promtool --version 2>&1 | head -1 | awk '{print $3}'))"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)

step "helm $(helm version --short) lint --strict + template | kubernetes-validate --strict"
for values in deploy/helm/ci/*.yaml; do
  echo "-- $values"
  helm lint --strict deploy/helm/knapsack-rl -f "$values"
  rendered=$(helm template krl deploy/helm/knapsack-rl -f "$values")
  printf '%s\n' "$rendered" | kubernetes-validate --strict --quiet -
done
echo "deploy checks passed"
