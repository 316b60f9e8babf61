"""Weights are resolved locally only; a missing model says how to get it."""

from __future__ import annotations

import pytest

from geosleuth.errors import ModelNotAvailableError
from geosleuth.models import resolve_model


def test_missing_hub_model_says_how_to_pull_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match=r"geosleuth models pull someorg/some-model"):
        resolve_model("someorg/some-model")


def test_local_directory_is_used_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path


def test_local_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
