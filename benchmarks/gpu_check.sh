#!/usr/bin/env bash
# The prepared GPU check (issue 17): CUDA tests, the loss benchmark, VAE and SmolLM2 throughput, a 2-stage
# fortifai-smollm2 smoke run and the presets' estimated wall times, printed as one table; under 8 minutes on one
# GPU. Run from the repository root after `make .venv/.installed` (the GPU machine has no internet: carry .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    echo "gpu_check: $PY not found; run \`make .venv/.installed\` first (or set PYTHON=/path/to/python)" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec timeout 480 "$PY" benchmarks/gpu_check.py --device "${DEVICE:-cuda}" "$@"
