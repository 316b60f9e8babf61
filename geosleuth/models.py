"""Where model weights come from: local folders, the Hugging Face cache, or an explicit download.

Nothing downloads implicitly. ``resolve_model`` only looks on this machine; a missing model raises
:class:`ModelNotAvailableError` telling the user to run ``geosleuth models pull``, which is the one
visible step that fetches weights (with progress bars).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geosleuth.config import Config
from geosleuth.errors import ModelNotAvailableError


@dataclass(frozen=True)
class ModelRef:
    role: str  # what the pipeline uses it for
    model_id: str  # hub id or local directory
    shipped: bool = False  # weights come inside a Python package (nothing to pull)


def configured_models(config: Config) -> list[ModelRef]:
    """The models the current configuration would load."""
    refs = [ModelRef("image encoder", config.encoders.image_model)]
    refs.append(ModelRef("GeoCLIP heads + location encoder", "geoclip (PyPI package)", shipped=True))
    if config.vlm.backend == "transformers":
        refs.append(ModelRef("VLM (in-process)", config.vlm.model))
    elif config.vlm.backend == "openai":
        refs.append(ModelRef("VLM (served; pull it on the server's machine)", config.vlm.server_model))
    elif config.vlm.backend == "vllm":
        refs.append(ModelRef("VLM (in-process vLLM engine)", config.vlm.server_model))
    return refs


def _pull_hint(model_id: str) -> str:
    return (
        f"run `geosleuth models pull {model_id}` on a machine that can reach huggingface.co "
        "(or point the setting at a local directory holding the model)"
    )


def resolve_model(model_id: str) -> Path:
    """Local directory for ``model_id`` (a local path, or a hub id already in the Hugging Face cache)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"model directory {str(path)!r} has no config.json; is it a model folder?")
        return path
    if path.is_absolute() or model_id.startswith((".", "~")):
        raise ModelNotAvailableError(f"model directory {model_id!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise ModelNotAvailableError(f"model {model_id!r} is not on this machine: {_pull_hint(model_id)}") from None


def is_available(model_id: str) -> bool:
    try:
        resolve_model(model_id)
    except ModelNotAvailableError:
        return False
    return True


def pull(model_id: str) -> Path:
    """Download ``model_id`` from the Hugging Face hub into its cache (progress bars on stderr)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id))
    except Exception as exc:  # the hub client raises many types; all mean "could not fetch"
        raise ModelNotAvailableError(
            f"could not download {model_id!r}: {type(exc).__name__}: {exc}. "
            "Check the network and the model id; gated models need `hf auth login` first."
        ) from None
