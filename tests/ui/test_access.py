"""Who may reach the web app and what it accepts, without a browser: the bind rule through the real
command, the token and the upload limits through the real app (its models never load here: these
requests are answered before any model is needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from geosleuth.cli import app as cli_app
from geosleuth.testing import photos

TOKEN = "s3cret-token"


def test_binding_beyond_loopback_needs_a_token():
    result = CliRunner().invoke(cli_app, ["ui", "--host", "0.0.0.0", "--port", "0"], env={"GEOSLEUTH_UI_TOKEN": ""})
    assert result.exit_code == 2
    assert "'0.0.0.0'" in result.output and "--token" in result.output


OCTETS = {"Content-Type": "application/octet-stream"}


def _client(tmp_path: Path, *, token: str | None = None, max_upload_bytes: int = 10_000_000,
            allowed_hosts: tuple[str, ...] | None = None) -> TestClient:
    from geosleuth.api import Geolocator
    from geosleuth.ui.app import UISettings, create_app

    geo = Geolocator.from_config(index={"cache_dir": str(tmp_path / "cache")})
    settings = UISettings(max_upload_bytes=max_upload_bytes, token=token, uploads_dir=tmp_path / "uploads",
                          allowed_hosts=allowed_hosts)
    return TestClient(create_app(geo, settings), base_url="http://127.0.0.1")  # no lifespan: no models


def test_with_a_token_every_request_must_carry_it(tmp_path: Path):
    client = _client(tmp_path, token=TOKEN)
    assert client.get("/").status_code == 401
    assert client.get("/static/app.js").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    # the address printed at start: the token moves from the URL into an HttpOnly cookie
    first = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert "httponly" in first.headers["set-cookie"].lower()
    assert client.get("/").status_code == 200  # the client now sends the cookie
    assert "geosleuth" in client.get("/").text


def test_without_a_token_on_loopback_the_page_loads_with_a_strict_policy(tmp_path: Path):
    response = _client(tmp_path).get("/")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy


def test_uploads_over_the_limit_are_refused_naming_the_file(tmp_path: Path):
    photo = photos.write_photo(tmp_path / "big.jpg", size=(400, 300))
    client = _client(tmp_path, max_upload_bytes=1000)
    response = client.post("/api/sessions?name=big.jpg", content=photo.read_bytes(), headers=OCTETS)
    assert response.status_code == 413
    assert response.json()["error"].startswith("big.jpg: the file is larger than the upload limit")
    assert not any(p.is_file() for p in (tmp_path / "uploads").rglob("*"))  # nothing kept


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (photos.write_text_file, "x.jpg: not an image file Pillow can read (it looks like a text file)"),
        (photos.write_empty_file, "x.jpg: the file is empty (0 bytes)"),
        (lambda p: photos.write_png_header_claiming(p, 100_000, 100_000), "x.jpg: the image is too large to decode"),
    ],
    ids=["text", "empty", "bomb"],
)
def test_bad_uploads_are_refused_with_the_safe_loaders_reason(tmp_path: Path, writer, message: str):
    bad = writer(tmp_path / "x.jpg")
    response = _client(tmp_path).post("/api/sessions?name=x.jpg", content=bad.read_bytes(), headers=OCTETS)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert not any(p.is_file() for p in (tmp_path / "uploads").rglob("*"))


def test_upload_names_cannot_leave_the_upload_folder(tmp_path: Path):
    from geosleuth.ui.security import safe_file_name

    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("..\\..\\x.jpg") == "x.jpg"
    assert safe_file_name("...") == "upload"
    assert safe_file_name("photo of <me>.jpg") == "photo_of_me_.jpg"


def test_other_web_pages_cannot_post_to_the_app(tmp_path: Path):
    """A cross-site form can send only form or text bodies without a CORS preflight; those are refused."""
    photo = photos.write_photo(tmp_path / "p.jpg")
    client = _client(tmp_path)
    text = {"Content-Type": "text/plain"}
    upload = client.post("/api/sessions?name=p.jpg", content=photo.read_bytes(), headers=text)
    assert upload.status_code == 415 and "application/octet-stream" in upload.json()["error"]
    message = client.post("/api/sessions/abc/messages", content='{"text": "hi"}', headers=text)
    assert message.status_code == 415 and "application/json" in message.json()["error"]
    batch = client.post("/api/batch", content=b"{}", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert batch.status_code == 415


def test_on_loopback_requests_must_be_addressed_to_loopback(tmp_path: Path):
    client = _client(tmp_path, allowed_hosts=("127.0.0.1", "localhost"))
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "evil.example:8765"}).status_code == 400  # DNS rebinding


def test_a_heic_photo_without_the_extra_says_what_to_install(tmp_path: Path):
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pillow-heif is installed: HEIC photos load")
    heic = photos.write_heic_stub(tmp_path / "phone.heic")
    response = _client(tmp_path).post("/api/sessions?name=phone.heic", content=heic.read_bytes(), headers=OCTETS)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "phone.heic: HEIC/HEIF images need the optional pillow-heif package: pip install 'geosleuth[heic]'")
