#!/usr/bin/env bash
# verl 0.9.1 for the recipe's tests (make test-verl): verl pins transformers 5.10, which clashes
# with the project's, so verl and the packages its DataProto and core_algos import go to
# .verl-pkgs/ without dependencies and run on PYTHONPATH beside .venv (torch, numpy and
# transformers from .venv). What is tested this way: verl's data structures and advantage
# functions, not its Ray workers or its vLLM rollout.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.verl-pkgs
stamp=$dir/.installed-0.9.1
[ -f "$stamp" ] && exit 0
rm -rf "$dir"
.venv/bin/pip install --quiet --no-deps --target "$dir" \
  verl==0.9.1 tensordict==0.10.0 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 \
  codetiming==1.4.0 hydra-core==1.3.8 ray==2.60.0 pyvers==0.1.0 cloudpickle==3.1.3 \
  orjson==3.13.0 msgpack==1.2.4 requests==2.34.2 urllib3==2.8.0 jsonschema==4.26.0 \
  attrs==26.1.0 referencing==0.37.0 rpds-py==2026.9.1 charset-normalizer==3.5.2 \
  jsonschema-specifications==2025.9.1
PYTHONPATH=$dir .venv/bin/python -c "import verl.trainer.ppo.core_algos, verl.protocol"
touch "$stamp"
