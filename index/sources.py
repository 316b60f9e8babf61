"""Gallery inputs: what goes into a gallery store, as one table of items.

Three kinds of source:

- an image folder (``ImageFolderSource``): every image file below it; each photo's position comes
  from its EXIF GPS tags (photos without GPS are reported, not guessed);
- a table (``TableSource``): a CSV or Parquet file with one row per image, MP16-Pro style:
  ``IMG_ID, AUTHOR, LAT, LON, neighbourhood, city, county, state, region, country, country_code,
  continent`` (column names in any case; ``latitude``/``longitude``/``lng`` work too). Image files
  are found through a ``path`` column or, failing that, ``IMG_ID`` relative to ``image_root``
  (default: the table's folder);
- precomputed embeddings (``EmbeddingsSource``): an ``.npy`` array (N, D), row i belonging to row i
  of such a table (no images needed).

All sources give :meth:`items`: a pandas DataFrame with columns ``id``, ``path`` (str or None),
``lat``/``lon`` (float; NaN = read from the image's EXIF), ``author`` (str or None), and one
``meta.<name>`` column per other table column (lower-cased name); :func:`metadata_records` turns
rows into metadata dicts (empty cells left out).

Table errors raise DataFileError naming the file and the row (1-based data row and its CSV line).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from geosleuth.errors import DataFileError, InvalidCoordinateError
from geosleuth.geo import validate_coordinate
from geosleuth.index.manifest import EncoderIdentity

if TYPE_CHECKING:
    import pandas as pd

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"})
TABLE_EXTENSIONS = frozenset({".csv", ".parquet", ".pq"})

_ID_NAMES = ("img_id", "image_id", "id")
_PATH_NAMES = ("path", "image_path", "filepath", "file")
_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "lng", "long", "longitude")
_AUTHOR_NAMES = ("author", "author_id", "owner", "user")
META_PREFIX = "meta."

SourceKind = Literal["image-folder", "table", "embeddings"]


class GallerySource(Protocol):
    kind: SourceKind

    def describe(self) -> dict[str, Any]:
        """What the source is (recorded in the store manifest)."""
        ...

    def items(self) -> pd.DataFrame:
        """One row per gallery item (see the module docstring for the columns)."""
        ...

    def fingerprint(self) -> str:
        """Changes when the items (or, for folders, the files) change: a resumed build checks it."""
        ...


def _hash_frame(frame: pd.DataFrame, columns: list[str]) -> str:
    import pandas as pd

    digest = hashlib.sha256(f"{len(frame)}\0{','.join(columns)}".encode())
    if len(frame):
        hashed = pd.util.hash_pandas_object(frame[columns].astype(str), index=False).to_numpy()
        digest.update(hashed.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Image folder


@dataclass
class ImageFolderSource:
    """Every image file below ``root`` (sorted, by extension), positioned by EXIF GPS."""

    root: Path
    kind: SourceKind = "image-folder"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise DataFileError(f"image folder {str(self.root)!r} does not exist or is not a folder")
        self._files: list[Path] | None = None

    def files(self) -> list[Path]:
        if self._files is None:
            # Hidden files and folders (.thumbnails, macOS ._ files) are not photos of the gallery.
            found = [
                p for p in self.root.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
            ]
            self._files = sorted(found, key=lambda p: p.relative_to(self.root).as_posix())
        return self._files

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root), "items": len(self.files())}

    def items(self) -> pd.DataFrame:
        import pandas as pd

        files = self.files()
        if not files:
            raise DataFileError(
                f"image folder {str(self.root)!r} holds no image files "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return pd.DataFrame(
            {
                "id": [p.relative_to(self.root).as_posix() for p in files],
                "path": [str(p) for p in files],
                "lat": np.full(len(files), np.nan),
                "lon": np.full(len(files), np.nan),
                "author": [None] * len(files),
            }
        )

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for p in self.files():
            st = p.stat()
            digest.update(f"{p.relative_to(self.root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Table (CSV / Parquet)


def _find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _where(file: Path, i: int, is_csv: bool) -> str:
    # i is 0-based over data rows; CSV line = header (1) + i + 1.
    return f"{str(file)!r}, row {i + 1}" + (f" (line {i + 2})" if is_csv else "")


def _cell(value: Any) -> Any:
    """A table cell as a JSON-friendly value; None for empty/missing."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    return str(value)


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (every cell as text, so errors quote values as written) or a Parquet file."""
    import pandas as pd

    if not path.is_file():
        raise DataFileError(f"gallery table {str(path)!r} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        kind = "Parquet" if path.suffix.lower() in (".parquet", ".pq") else "CSV"
        raise DataFileError(f"gallery table {str(path)!r} is not a readable {kind} file: {exc}") from None
    if frame.empty:
        raise DataFileError(f"gallery table {str(path)!r} has no rows")
    return frame


def table_items(path: Path, *, image_root: Path | None = None, need_images: bool = True) -> pd.DataFrame:
    """Validate a gallery table and return its items (see the module docstring)."""
    import pandas as pd

    frame = read_table(path)
    is_csv = path.suffix.lower() not in (".parquet", ".pq")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    found = ", ".join(columns)
    lat_col = _find_column(columns, _LAT_NAMES)
    lon_col = _find_column(columns, _LON_NAMES)
    for col, what, names in ((lat_col, "latitude", _LAT_NAMES), (lon_col, "longitude", _LON_NAMES)):
        if col is None:
            raise DataFileError(
                f"gallery table {str(path)!r} has no {what} column (looked for "
                f"{', '.join(n.upper() for n in names)} in any case; found: {found})"
            )
    id_col = _find_column(columns, _ID_NAMES)
    path_col = _find_column(columns, _PATH_NAMES)
    if id_col is None and path_col is None:
        raise DataFileError(
            f"gallery table {str(path)!r} has no image id or path column (looked for "
            f"{', '.join(n.upper() for n in _ID_NAMES + _PATH_NAMES)}; found: {found})"
        )
    author_col = _find_column(columns, _AUTHOR_NAMES)

    ids: list[str] = []
    for i, value in enumerate(frame[id_col or path_col].tolist()):
        text = _cell(value)
        if text is None:
            raise DataFileError(f"gallery table {_where(path, i, is_csv)}: the image id is empty")
        ids.append(str(text))
    duplicated = pd.Series(ids).duplicated(keep="first")
    if duplicated.any():
        i = int(np.flatnonzero(duplicated.to_numpy())[0])
        first = ids.index(ids[i])
        raise DataFileError(
            f"gallery table {_where(path, i, is_csv)}: image id {ids[i]!r} repeats row {first + 1}; ids must be unique"
        )

    lats = _numbers(frame[lat_col])
    lons = _numbers(frame[lon_col])
    bad = ~np.isfinite(lats) | ~np.isfinite(lons) | (np.abs(lats) > 90) | (np.abs(lons) > 360)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        try:
            validate_coordinate(
                _cell(frame[lat_col].iat[i]), _cell(frame[lon_col].iat[i]),
                what=f"gallery table {_where(path, i, is_csv)}",
            )
        except InvalidCoordinateError as exc:
            raise DataFileError(str(exc)) from None
    lons = ((lons + 180.0) % 360.0) - 180.0

    paths: list[str | None] = [None] * len(frame)
    if need_images:
        # Absolute, so a resumed build started from another working directory sees the same items.
        root = (image_root if image_root is not None else path.parent).resolve()
        source_col = path_col or id_col
        for i, value in enumerate(frame[source_col].tolist()):
            text = _cell(value)
            if text is None:
                raise DataFileError(f"gallery table {_where(path, i, is_csv)}: the image path is empty")
            p = Path(str(text))
            paths[i] = str(p if p.is_absolute() else root / p)

    special = {c for c in (id_col, path_col, lat_col, lon_col) if c is not None}
    items = pd.DataFrame({"id": ids, "path": paths, "lat": lats, "lon": lons})
    items["author"] = (
        [None if (a := _cell(v)) is None else str(a) for v in frame[author_col].tolist()]
        if author_col is not None else None
    )
    for col in columns:
        if col not in special:
            # Metadata stays columnar (a dict per row would cost GBs at MP16 scale).
            items[META_PREFIX + col.strip().lower()] = frame[col].to_numpy()
    return items


def _numbers(column: pd.Series) -> np.ndarray:
    import pandas as pd

    if column.dtype == object or pd.api.types.is_string_dtype(column):
        column = column.astype(str).str.strip()
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def metadata_records(items: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-row metadata dicts (lower-cased column names; empty cells left out) of an items slice."""
    meta_cols = [c for c in items.columns if c.startswith(META_PREFIX)]
    if not meta_cols:
        return [{} for _ in range(len(items))]
    keys = [c[len(META_PREFIX):] for c in meta_cols]
    out: list[dict[str, Any]] = []
    for values in zip(*(items[c].tolist() for c in meta_cols), strict=True):
        out.append({k: v for k, v in zip(keys, map(_cell, values), strict=True) if v is not None})
    return out


@dataclass
class TableSource:
    """A CSV/Parquet table of images with coordinates (and optional MP16-style metadata)."""

    path: Path
    image_root: Path | None = None
    kind: SourceKind = "table"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.image_root = Path(self.image_root) if self.image_root is not None else None
        self._items: pd.DataFrame | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": str(self.path), "items": len(self.items())}
        if self.image_root is not None:
            out["image_root"] = str(self.image_root)
        return out

    def items(self) -> pd.DataFrame:
        if self._items is None:
            self._items = table_items(self.path, image_root=self.image_root, need_images=True)
        return self._items

    def fingerprint(self) -> str:
        items = self.items()
        return _hash_frame(items, list(items.columns))


# ---------------------------------------------------------------------------------------------
# Precomputed embeddings


def sidecar_path(embeddings: Path) -> Path:
    """``X.npy`` -> ``X.json``: states which encoder made the embeddings."""
    return embeddings.with_suffix(".json")


def read_encoder_sidecar(embeddings: Path) -> EncoderIdentity | None:
    """The encoder identity written next to an ``.npy`` file as ``X.json``
    (``{"name": ..., "model_id": ..., "weights_hash": ...}``), or None when there is none."""
    file = sidecar_path(embeddings)
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return EncoderIdentity(
            name=str(data["name"]), model_id=str(data.get("model_id", "")),
            weights_hash=str(data["weights_hash"]), dim=int(data["dim"]),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataFileError(
            f"embedding description {str(file)!r} is unreadable ({type(exc).__name__}: {exc}); it must be JSON "
            'like {"name": "clip+geoclip", "model_id": "...", "weights_hash": "...", "dim": 768}'
        ) from None


def write_encoder_sidecar(embeddings: Path, identity: EncoderIdentity) -> Path:
    """Write ``X.json`` next to ``X.npy`` describing the encoder that produced it."""
    file = sidecar_path(embeddings)
    file.write_text(
        json.dumps({"name": identity.name, "model_id": identity.model_id,
                    "weights_hash": identity.weights_hash, "dim": identity.dim}, indent=2) + "\n",
        encoding="utf-8",
    )
    return file


@dataclass
class EmbeddingsSource:
    """Precomputed embeddings (``.npy``, one row per table row) plus their table of coordinates."""

    embeddings_path: Path
    table_path: Path
    encoder: EncoderIdentity
    kind: SourceKind = "embeddings"

    def __post_init__(self) -> None:
        self.embeddings_path = Path(self.embeddings_path)
        self.table_path = Path(self.table_path)
        self._items: pd.DataFrame | None = None
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The (N, D) embeddings, memory-mapped (not loaded)."""
        if self._array is None:
            file = self.embeddings_path
            if not file.is_file():
                raise DataFileError(f"embeddings file {str(file)!r} does not exist")
            try:
                array = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataFileError(f"embeddings file {str(file)!r} is not a readable .npy array: {exc}") from None
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
                raise DataFileError(
                    f"embeddings file {str(file)!r} holds a {array.dtype} array of shape {array.shape}; "
                    "expected floats of shape (N, D)"
                )
            if array.shape[1] != self.encoder.dim:
                raise DataFileError(
                    f"embeddings file {str(file)!r} has {array.shape[1]}-d rows, but encoder "
                    f"{self.encoder.describe()} makes {self.encoder.dim}-d embeddings"
                )
            self._array = array
        return self._array

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "path": str(self.table_path), "embeddings": str(self.embeddings_path),
            "items": len(self.items()),
        }

    def items(self) -> pd.DataFrame:
        if self._items is None:
            items = table_items(self.table_path, need_images=False)
            rows = self.array().shape[0]
            if rows != len(items):
                raise DataFileError(
                    f"embeddings file {str(self.embeddings_path)!r} has {rows} rows but gallery table "
                    f"{str(self.table_path)!r} has {len(items)}; row i of each must describe the same image"
                )
            self._items = items
        return self._items

    def fingerprint(self) -> str:
        items = self.items()
        st = os.stat(self.embeddings_path)
        table = _hash_frame(items, list(items.columns))
        return hashlib.sha256(f"{table}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


def open_source(
    source: str | Path,
    *,
    embeddings: str | Path | None = None,
    encoder: EncoderIdentity | None = None,
    image_root: str | Path | None = None,
) -> GallerySource:
    """The gallery source a path names: a folder of photos, or a table (with ``embeddings``: the
    precomputed embeddings, made by ``encoder``)."""
    path = Path(source)
    if embeddings is not None:
        if encoder is None:
            raise DataFileError(
                f"precomputed embeddings {str(embeddings)!r}: say which encoder made them "
                f"(write {str(sidecar_path(Path(embeddings)))!r})"
            )
        if path.is_dir():
            raise DataFileError(
                f"precomputed embeddings need a CSV/Parquet table of coordinates, {str(path)!r} is a folder"
            )
        if not path.is_file():
            raise DataFileError(f"gallery table {str(path)!r} does not exist")
        return EmbeddingsSource(Path(embeddings), path, encoder)
    if path.is_dir():
        if image_root is not None:
            raise DataFileError("--image-root only applies to a CSV/Parquet source, not to an image folder")
        return ImageFolderSource(path)
    if path.suffix.lower() in TABLE_EXTENSIONS:
        if not path.is_file():
            raise DataFileError(f"gallery table {str(path)!r} does not exist")
        return TableSource(path, Path(image_root) if image_root is not None else None)
    if not path.exists():
        raise DataFileError(
            f"gallery source {str(path)!r} does not exist (give an image folder or a CSV/Parquet table)"
        )
    raise DataFileError(
        f"gallery source {str(path)!r} is neither a folder of images nor a table "
        f"({', '.join(sorted(TABLE_EXTENSIONS))})"
    )
