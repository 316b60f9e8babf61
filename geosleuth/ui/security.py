"""Who may use the app, and what an upload may be.

- Bound to a loopback address the app needs no token; bound to any other address it refuses to start
  without one. With a token, every request must carry it: ``?token=`` once (the page then keeps it in
  an HttpOnly cookie), the cookie, or ``Authorization: Bearer``.
- Uploads are streamed to disk with a byte limit, then checked by the CLI's safe image loader
  (:func:`geosleuth.imageio.load_image`: same pixel limit, same refusals), so a bad file is one clear
  message naming it and never reaches the pipeline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tempfile
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from geosleuth.errors import ConfigError, GeosleuthError, ImageLoadError
from geosleuth.imageio import load_image

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_ENV = "GEOSLEUTH_UI_TOKEN"
TOKEN_COOKIE = "geosleuth_ui_token"
DEFAULT_MAX_UPLOAD_MB = 50.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(GeosleuthError):
    """An upload was refused (too large, empty, not an image); the message names the file."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token."""
    if host not in LOOPBACK_HOSTS and not token:
        raise ConfigError(
            f"geosleuth ui is bound to {host!r}, which other machines can reach: give an access token with "
            f"--token or ${TOKEN_ENV} (or bind to 127.0.0.1)"
        )


class TokenMiddleware:
    """Every request must carry ``token`` (query, cookie or bearer header); others get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _matches(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = (query.get("token") or [None])[0]
        cookie = SimpleCookie(headers.get("cookie", ""))
        from_cookie = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
        auth = headers.get("authorization", "")
        from_header = auth[7:] if auth.lower().startswith("bearer ") else None
        if self._matches(from_query) and scope["method"] == "GET":
            # Keep the token out of the address bar and history: set the cookie, drop it from the URL.
            rest = {k: v for k, v in query.items() if k != "token"}
            target = scope["path"] + ("?" + urlencode(rest, doseq=True) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        if self._matches(from_cookie) or self._matches(from_header) or self._matches(from_query):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "this geosleuth ui needs its access token: open the address printed when it started (with ?token=...)",
            status_code=401,
        )
        await response(scope, receive, send)


def safe_file_name(name: str, default: str = "upload") -> str:
    """A file name safe to write under our folder (no path parts, no odd characters)."""
    base = Path(name.replace("\\", "/")).name
    cleaned = _SAFE_NAME.sub("_", base).strip("._")
    return cleaned[:100] or default


async def save_upload(chunks: AsyncIterator[bytes], name: str, folder: Path, *, max_bytes: int) -> Path:
    """Stream an upload to ``folder/<sha256 prefix>/<name>``, refusing more than ``max_bytes``."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".upload-", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(
                        f"{name}: the file is larger than the upload limit of {max_bytes / 1e6:.0f} MB "
                        "(start geosleuth ui with a larger --max-upload-mb)", status_code=413,
                    )
                digest.update(chunk)
                tmp.write(chunk)
        except BaseException:
            tmp.close()
            tmp_path.unlink(missing_ok=True)
            raise
    if size == 0:
        tmp_path.unlink(missing_ok=True)
        raise UploadError(f"{name}: the file is empty (0 bytes); choose a photo (JPEG, PNG, WebP or HEIC)")
    target = folder / digest.hexdigest()[:16] / safe_file_name(name, "photo")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path.replace(target)
    return target


def check_image(path: Path, name: str) -> None:
    """Refuse what the CLI's safe loader refuses, with its reason, naming the uploaded file."""
    try:
        load_image(path)
    except ImageLoadError as exc:
        path.unlink(missing_ok=True)
        raise UploadError(f"{name}: {exc.reason}") from None
