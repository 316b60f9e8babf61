"""Preflight: one real request to a VLM server before the first photo, so a run whose server is
down stops at once with a clear error instead of answering every photo from retrieval alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geosleuth.errors import StageUnavailableError
from geosleuth.vlm.backends import ChatMessage, VLMRequest, VLMRequestError

if TYPE_CHECKING:
    from PIL import Image

    from geosleuth.config import VLMConfig
    from geosleuth.vlm.backends import VLMBackend

# Enough for the server to prove it reads an image and generates; the answer itself is not used.
PROBE_MAX_TOKENS = 4


def _probe_picture() -> Image.Image:
    from PIL import Image as PILImage

    return PILImage.new("RGB", (64, 48), (120, 170, 230))


async def check_server_answers(backend: VLMBackend, config: VLMConfig) -> None:
    """Send one small real request (a picture and a question, one sample); raise
    StageUnavailableError saying what failed, where, and how to start the server."""
    request = VLMRequest(
        messages=[ChatMessage("user", "Where was this picture taken? Answer in one word.", [_probe_picture()])],
        n=1, temperature=0.0, max_tokens=PROBE_MAX_TOKENS,
    )
    try:
        await backend.generate(request)
    except VLMRequestError as exc:
        raise StageUnavailableError(
            f"preflight failed: the VLM server at {config.base_url} (model {config.server_model!r}) did not "
            f"answer a test request, so no photo was run. {exc} To start a server: `geosleuth vlm serve` "
            "(or point vlm.base_url at a running one); to answer from retrieval alone: --set vlm.backend=none"
        ) from exc
