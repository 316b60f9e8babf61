"""Exceptions. Every message names the input at fault and says what the user can do about it."""

from __future__ import annotations


class GeosleuthError(Exception):
    """Base class for all errors geosleuth raises on purpose."""


class InvalidCoordinateError(GeosleuthError, ValueError):
    """A latitude/longitude pair is missing, not a number, or out of range."""


class ImageLoadError(GeosleuthError):
    """An image file could not be read as a picture (missing, corrupt, too large, unsupported)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load image {self.path!r}: {reason}")


class ConfigError(GeosleuthError):
    """The configuration file, an environment override or a --set flag is invalid."""


class ModelNotAvailableError(GeosleuthError):
    """A model's weights are not on this machine."""


class GalleryIndexError(GeosleuthError):
    """A gallery index is missing, corrupt, or was built with a different encoder."""


class DataFileError(GeosleuthError):
    """A CSV/JSONL/Parquet input file is missing, unreadable, or lacks required columns."""


class VLMError(GeosleuthError):
    """The vision-language model could not be reached or its answer could not be used."""


class StageUnavailableError(GeosleuthError):
    """A stage the configuration asks for (the VLM server, a gallery) is not working, so a run would
    only produce degraded answers: it is stopped before (preflight) or during (circuit breaker) the run."""


class DegradedResultsError(GeosleuthError):
    """Too many answers lack a stage the configuration asks for to report them as that configuration
    (e.g. an evaluation whose VLM was down); ``--allow-degraded`` reports them, marked as degraded."""
