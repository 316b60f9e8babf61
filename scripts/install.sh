#!/usr/bin/env bash
# Install geosleuth into ./.venv (or $GEOSLEUTH_VENV). Safe to re-run.
#
# - No NVIDIA GPU: torch==2.13.0 first (on these machines that is the CPU build lying on disk; an
#   open torch range would pull a multi-GB CUDA build). With a GPU: the usual CUDA build.
# - geoclip is installed with --no-deps: it declares torchvision, which breaks transformers'
#   processors beside the CPU torch build; its location encoder never needs torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GEOSLEUTH_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[install] NVIDIA GPU found: default (CUDA) torch build"
    # torchvision: the GPU recipe's Qwen2.5-VL processors need it (it breaks nothing beside a CUDA torch)
    "${PIP[@]}" install "torch>=2.4" torchvision
else
    echo "[install] no GPU: torch 2.13.0 (CPU build)"
    "${PIP[@]}" install "torch==2.13.0"
fi
echo "[install] geosleuth and its dependencies"
"${PIP[@]}" install -e ".[test]"
"${PIP[@]}" install --no-deps "geoclip==1.3.0"
"$VENV/bin/geosleuth" --version
echo "[install] done: activate with 'source $VENV/bin/activate' or call $VENV/bin/geosleuth"
