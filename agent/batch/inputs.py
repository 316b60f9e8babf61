"""Batch inputs: which images a run covers, from a folder, a CSV with a path column, or a list file.

Plain functions over files, with no event loop: every engine (local asyncio, Ray) reads its inputs here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from geosleuth.errors import DataFileError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jfif"}
)

# Column names accepted for the image path / id in a CSV input (matched case-insensitively).
PATH_COLUMNS = ("path", "image", "image_path", "img_path", "file", "filename", "img", "image_file")
ID_COLUMNS = ("id", "image_id", "img_id", "key", "name")

InputKind = Literal["folder", "csv", "list"]


@dataclass(frozen=True)
class BatchItem:
    """One image to locate: ``id`` is unique within a run and names it in the results file."""

    id: str
    path: str


@dataclass(frozen=True)
class BatchInput:
    items: list[BatchItem]
    kind: InputKind
    source: Path
    ignored_files: int = 0  # files in a folder skipped because their suffix is not an image's


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (recursive, hidden files/folders skipped, sorted by relative
    path) and how many other files were ignored."""
    found: list[Path] = []
    ignored = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root, name)
            if _is_image_file(path):
                found.append(path)
            else:
                ignored += 1
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    return found, ignored


def check_unique(items: Sequence[BatchItem], where: Sequence[str], source: Path) -> None:
    seen: dict[str, str] = {}
    for item, here in zip(items, where, strict=True):
        if item.id in seen:
            raise DataFileError(
                f"{source}: image id {item.id!r} appears twice ({seen[item.id]} and {here}); "
                "ids name results, so each must be unique: remove the duplicate or add an id column"
            )
        seen[item.id] = here


def _resolve(raw: str, base: Path) -> str:
    path = Path(raw).expanduser()
    return str(path if path.is_absolute() else base / path)


def _read_csv_input(source: Path) -> list[BatchItem]:
    try:
        with source.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{source}: cannot read as CSV ({exc})") from None
    lowered = {f.lower(): f for f in fields}
    path_col = next((lowered[c] for c in PATH_COLUMNS if c in lowered), None)
    if path_col is None:
        raise DataFileError(
            f"{source}: no image path column (looked for {', '.join(PATH_COLUMNS)}; found "
            f"{', '.join(fields) or 'no header'}); add a 'path' column with one image path per row"
        )
    id_col = next((lowered[c] for c in ID_COLUMNS if c in lowered and lowered[c] != path_col), None)
    items: list[BatchItem] = []
    where: list[str] = []
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        raw = row.get(path_col, "")
        if not raw:
            raise DataFileError(f"{source}, line {line}: empty {path_col!r}; every row needs an image path")
        image_id = (row.get(id_col, "") if id_col else "") or raw
        items.append(BatchItem(image_id, _resolve(raw, source.parent)))
        where.append(f"line {line}")
    check_unique(items, where, source)
    return items


def _read_list_input(source: Path) -> list[BatchItem]:
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{source}: cannot read the list of images ({exc})") from None
    items: list[BatchItem] = []
    where: list[str] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        items.append(BatchItem(raw, _resolve(raw, source.parent)))
        where.append(f"line {line}")
    check_unique(items, where, source)
    return items


def read_batch_input(source: str | os.PathLike[str]) -> BatchInput:
    """The images named by ``source``: a folder (searched recursively, ids = relative paths), a CSV
    (a path column and an optional id column) or a list file (one path per line, ``#`` comments).

    Relative paths in a CSV or list file are relative to that file's folder.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files, ignored = find_images(path)
        items = [BatchItem(f.relative_to(path).as_posix(), str(f)) for f in files]
        kind: InputKind = "folder"
    elif path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            items, ignored, kind = _read_csv_input(path), 0, "csv"
        elif _is_image_file(path):
            raise DataFileError(
                f"{path} is an image, not a batch input; use `geosleuth locate {path}` for one image, "
                "or give a folder, a CSV or a list file"
            )
        else:
            items, ignored, kind = _read_list_input(path), 0, "list"
    else:
        raise DataFileError(f"{path} does not exist; give a folder of images, a CSV or a list file")
    if not items:
        raise DataFileError(
            f"{path}: no images found"
            + (f" ({ignored} other files ignored; image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
               if ignored else "")
        )
    return BatchInput(items, kind, path, ignored)
