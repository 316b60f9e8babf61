#!/usr/bin/env bash
# Run the test suite the way CI does: install (scripts/install.sh), build the CPU vLLM test
# environment (scripts/build_vllm_cpu_env.sh, used only by the tests that need a real server),
# then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GEOSLEUTH_VENV:-.venv}"

bash scripts/install.sh
if [ -z "${GEOSLEUTH_VLLM_PYTHON:-}" ]; then
    if bash scripts/build_vllm_cpu_env.sh .venv-vllm; then
        export GEOSLEUTH_VLLM_PYTHON="$PWD/.venv-vllm/bin/python"
    else
        # The vLLM tests then report as skipped (with this reason), never as passed.
        echo "[test] WARNING: could not build the CPU vLLM environment; vLLM tests will be skipped" >&2
    fi
fi
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
