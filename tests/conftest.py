"""Session-wide fixtures: tiny random models built locally from configs (no downloads), cached per session."""

from __future__ import annotations

from pathlib import Path

import pytest
