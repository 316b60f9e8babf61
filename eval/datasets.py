"""Benchmark ground truth: IM2GPS3K, YFCC4K and generic CSV/JSONL files.

Every loader returns a :class:`GroundTruthSet`: the records in file order, the ids whose images
are missing or unreadable (listed, never fatal: the run scores them as failures, so they stay in
the denominator), and the warnings it raised. Warnings are also emitted through :mod:`warnings`
with category :class:`DatasetWarning`, so a CLI can show them and a test can assert them.

IM2GPS3K's ``im2gps3k_places365.csv`` circulates in a copy whose LAT/LON header is swapped (the
column named LON holds latitudes). :func:`detect_swapped_lat_lon` decides from the values:

- all of LAT within ±90 and some |LON| > 90  -> header is right;
- all of LON within ±90 and some |LAT| > 90  -> header is swapped: the columns are exchanged and a
  warning says so;
- both columns within ±90 (possible on small subsets, e.g. Europe-only) -> the values cannot tell:
  the header is trusted as written and a warning says so; pass ``swapped=True`` to override;
- both columns have |value| > 90 -> the file does not hold coordinates: :class:`DataFileError`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geosleuth.errors import DataFileError

DATASET_NAMES = ("im2gps3k", "yfcc4k", "generic")
# Known metadata file names, for a truth *folder* (the benchmarks' own names first).
TRUTH_FILE_NAMES = {
    "im2gps3k": ("im2gps3k_places365.csv",),
    "yfcc4k": ("yfcc4k_places365.csv", "yfcc4k.csv"),
}

# Extensions tried when an id names no file (some YFCC4K copies list bare Flickr ids).
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")

# Case-insensitive column aliases for the generic format.
_ID_COLUMNS = ("id", "img_id", "image_id", "image", "filename", "file")
_LAT_COLUMNS = ("lat", "latitude", "gt_lat")
_LON_COLUMNS = ("lon", "lng", "long", "longitude", "gt_lon", "gt_long")
_AUTHOR_COLUMNS = ("author", "owner", "user")
_PATH_COLUMNS = ("path", "image_path", "file_path")


class DatasetWarning(UserWarning):
    """Something about a data file was fixed or guessed; the message says what and why."""


@dataclass(frozen=True)
class GroundTruth:
    """Where one benchmark image was really taken."""

    id: str
    lat: float
    lon: float
    author: str | None = None
    image_path: Path | None = None  # None when no image root was given


@dataclass
class GroundTruthSet:
    """A loaded benchmark: records in file order plus what was found wrong with it."""

    dataset: str
    source: Path
    records: list[GroundTruth]
    missing_images: list[str] = field(default_factory=list)  # ids whose image is missing/unreadable
    swapped_lat_lon: bool = False
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[GroundTruth]:
        return iter(self.records)


def _warn(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, DatasetWarning, stacklevel=3)


def _parse_float(raw: object) -> float | None:
    """A finite float, or None for empty / non-numeric / NaN cells."""
    if raw is None:
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def wrap_lon(lon: float) -> float:
    """Longitude in [-180, 180); values already in range are returned bit-for-bit unchanged
    (the modulo formula would add float noise such as 2.3522 -> 2.3522000000000105)."""
    return lon if -180.0 <= lon < 180.0 else ((lon + 180.0) % 360.0) - 180.0


def _find_column(fieldnames: Sequence[str], aliases: Sequence[str]) -> str | None:
    by_lower = {name.strip().lower(): name for name in fieldnames}
    for alias in aliases:
        if alias in by_lower:
            return by_lower[alias]
    return None


def _read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs; the header is line 1."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = [name.strip() for name in (reader.fieldnames or [])]
            reader.fieldnames = fieldnames
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DataFileError(f"{path}: file does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{path}: cannot read as a UTF-8 CSV file ({exc})") from None
    if not fieldnames:
        raise DataFileError(f"{path}: empty file (no header row); expected a CSV with a header")
    return fieldnames, rows


def _read_jsonl_rows(path: Path) -> list[tuple[int, dict[str, object]]]:
    out: list[tuple[int, dict[str, object]]] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataFileError(f"{path}, line {line_no}: expected a JSON object per line")
                out.append((line_no, row))
    except FileNotFoundError:
        raise DataFileError(f"{path}: file does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read as UTF-8 JSON lines ({exc})") from None
    return out


def detect_swapped_lat_lon(
    lat_values: Sequence[float], lon_values: Sequence[float], *, source: str = "file"
) -> tuple[bool, str | None]:
    """Decide whether the columns labelled latitude/longitude are exchanged (rules: module docstring).

    Returns (swapped, note): ``note`` explains a swap or an undecidable case, None when the header
    is plainly right.
    """
    lat_fits = all(abs(v) <= 90.0 for v in lat_values)
    lon_fits = all(abs(v) <= 90.0 for v in lon_values)
    if lat_fits and not lon_fits:
        return False, None
    if lon_fits and not lat_fits:
        return True, (
            f"{source}: the column labelled latitude has values beyond ±90 while the one labelled longitude "
            "stays within ±90, so the LAT/LON header is swapped (a widely copied version of this file); "
            "the columns were exchanged"
        )
    if lat_fits and lon_fits:
        return False, (
            f"{source}: every value in both coordinate columns is within ±90, so the values cannot tell "
            "whether the LAT/LON header is swapped; the header was trusted as written "
            "(pass swapped=True if you know this copy is the swapped one)"
        )
    raise DataFileError(
        f"{source}: both coordinate columns have values beyond ±90, so neither holds latitudes; "
        "check that this is the right file and that its LAT/LON columns hold degrees"
    )


def _resolve_image(image_root: Path, name: str) -> Path:
    """Path of an image named ``name`` under ``image_root``, trying common extensions for bare ids."""
    direct = image_root / name
    if direct.is_file() or Path(name).suffix:
        return direct
    for ext in _IMAGE_EXTENSIONS:
        candidate = image_root / f"{name}{ext}"
        if candidate.is_file():
            return candidate
    return direct


def _image_problem(path: Path) -> str | None:
    """Why an image cannot be used, or None. Cheap: existence, size and readability, not decoding."""
    try:
        if not path.is_file():
            return "missing"
        if path.stat().st_size == 0:
            return "empty file"
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


def _check_images(records: list[GroundTruth], notes: list[str], source: Path) -> list[str]:
    missing: list[str] = []
    examples: list[str] = []
    for record in records:
        if record.image_path is None:
            continue
        problem = _image_problem(record.image_path)
        if problem is not None:
            missing.append(record.id)
            if len(examples) < 3:
                examples.append(f"{record.image_path} ({problem})")
    if missing:
        _warn(
            notes,
            f"{source}: {len(missing)} of {len(records)} images are missing or unreadable, e.g. "
            f"{'; '.join(examples)}; they stay in the benchmark and count as failures",
        )
    return missing


def _coordinate(raw: object, what: str, source: Path, line: int) -> float:
    value = _parse_float(raw)
    if value is None:
        raise DataFileError(f"{source}, line {line}: {what} {raw!r} is not a number; fix or remove this row")
    return value


def _load_benchmark_csv(
    path: Path,
    dataset: str,
    image_root: Path | None,
    swapped: bool | None,
    check_images: bool,
    require_author: bool,
) -> GroundTruthSet:
    fieldnames, rows = _read_csv_rows(path)
    required = ["IMG_ID", "LAT", "LON"] + (["AUTHOR"] if require_author else [])
    missing_cols = [c for c in required if c not in fieldnames]
    if missing_cols:
        raise DataFileError(
            f"{path}: missing column(s) {', '.join(missing_cols)} (found: {', '.join(fieldnames)}); "
            f"a {dataset} metadata file has {', '.join(required)}"
        )
    if not rows:
        raise DataFileError(f"{path}: no data rows below the header")
    notes: list[str] = []
    ids: list[str] = []
    lats: list[float] = []
    lons: list[float] = []
    authors: list[str | None] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        image_id = (row.get("IMG_ID") or "").strip()
        if not image_id:
            raise DataFileError(f"{path}, line {line}: empty IMG_ID; every row needs an image id")
        if image_id in seen:
            raise DataFileError(
                f"{path}, line {line}: IMG_ID {image_id!r} already appears on line {seen[image_id]}; "
                "remove the duplicate row"
            )
        seen[image_id] = line
        ids.append(image_id)
        lats.append(_coordinate(row.get("LAT"), "LAT", path, line))
        lons.append(_coordinate(row.get("LON"), "LON", path, line))
        author = (row.get("AUTHOR") or "").strip()
        authors.append(author or None)

    if swapped is None:
        swapped, note = detect_swapped_lat_lon(lats, lons, source=str(path))
        if note:
            _warn(notes, note)
    elif swapped:
        _warn(notes, f"{path}: LAT/LON columns exchanged as requested (swapped=True)")
    if swapped:
        lats, lons = lons, lats

    records: list[GroundTruth] = []
    for image_id, lat, lon, author, (line, _) in zip(ids, lats, lons, authors, rows, strict=True):
        if abs(lat) > 90.0 or abs(lon) > 360.0:
            raise DataFileError(
                f"{path}, line {line}: ({lat}, {lon}) is not a valid latitude/longitude; fix this row"
            )
        image_path = _resolve_image(image_root, image_id) if image_root is not None else None
        records.append(GroundTruth(image_id, lat, wrap_lon(lon), author, image_path))

    missing = _check_images(records, notes, path) if (image_root is not None and check_images) else []
    return GroundTruthSet(dataset, path, records, missing, bool(swapped), notes)


def load_im2gps3k(
    metadata_csv: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    swapped: bool | None = None,
    check_images: bool = True,
) -> GroundTruthSet:
    """IM2GPS3K from ``im2gps3k_places365.csv`` (IMG_ID, AUTHOR, LAT, LON, ...).

    ``swapped``: None detects a swapped LAT/LON header from the values (module docstring), True/False
    forces it. Images are looked up as ``image_root / IMG_ID`` when ``image_root`` is given.
    """
    return _load_benchmark_csv(
        Path(metadata_csv), "im2gps3k", Path(image_root) if image_root else None, swapped, check_images, True
    )


def load_yfcc4k(
    metadata_csv: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    swapped: bool | None = None,
    check_images: bool = True,
) -> GroundTruthSet:
    """YFCC4K from ``yfcc4k_places365.csv`` (IMG_ID, LAT, LON, optional AUTHOR, ...).

    The same swapped-header check as IM2GPS3K is applied. Bare ids get a .jpg/.jpeg/.png extension
    when the image exists under that name.
    """
    return _load_benchmark_csv(
        Path(metadata_csv), "yfcc4k", Path(image_root) if image_root else None, swapped, check_images, False
    )


def _generic_row_value(row: Mapping[str, object], column: str | None) -> object:
    return row.get(column) if column is not None else None


def load_generic(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    check_images: bool = True,
) -> GroundTruthSet:
    """A CSV or JSONL (``.jsonl``/``.ndjson``/``.json`` lines) with id, lat, lon and optional author.

    Column names are matched case-insensitively (id/img_id/image_id/image, lat/latitude,
    lon/lng/long/longitude, author). An optional path/image_path column names the image relative to
    ``image_root``; otherwise the image is ``image_root / id``.
    """
    source = Path(path)
    notes: list[str] = []
    root = Path(image_root) if image_root else None
    rows: list[tuple[int, Mapping[str, object]]]
    if source.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        json_rows = _read_jsonl_rows(source)
        keys: list[str] = sorted({key for _, row in json_rows for key in row})
        rows = list(json_rows)
    else:
        keys, csv_rows = _read_csv_rows(source)
        rows = list(csv_rows)
    if not rows:
        raise DataFileError(f"{source}: no data rows; expected one record per row with id, lat, lon")
    id_col = _find_column(keys, _ID_COLUMNS)
    lat_col = _find_column(keys, _LAT_COLUMNS)
    lon_col = _find_column(keys, _LON_COLUMNS)
    absent = [name for name, col in (("id", id_col), ("lat", lat_col), ("lon", lon_col)) if col is None]
    if absent:
        raise DataFileError(
            f"{source}: no {', '.join(absent)} column (found: {', '.join(keys) or 'none'}); "
            "a generic ground-truth file needs id, lat and lon"
        )
    author_col = _find_column(keys, _AUTHOR_COLUMNS)
    path_col = _find_column(keys, _PATH_COLUMNS)
    records: list[GroundTruth] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        raw_id = _generic_row_value(row, id_col)
        record_id = "" if raw_id is None else str(raw_id).strip()
        if not record_id:
            raise DataFileError(f"{source}, line {line}: empty id; every record needs an id")
        if record_id in seen:
            raise DataFileError(
                f"{source}, line {line}: id {record_id!r} already appears on line {seen[record_id]}; "
                "remove the duplicate"
            )
        seen[record_id] = line
        lat = _coordinate(_generic_row_value(row, lat_col), "lat", source, line)
        lon = _coordinate(_generic_row_value(row, lon_col), "lon", source, line)
        if abs(lat) > 90.0 or abs(lon) > 360.0:
            hint = " (are lat and lon swapped?)" if abs(lat) > 90.0 and abs(lon) <= 90.0 else ""
            raise DataFileError(f"{source}, line {line}: ({lat}, {lon}) is not a valid coordinate{hint}")
        raw_author = _generic_row_value(row, author_col)
        author = str(raw_author).strip() if raw_author not in (None, "") else None
        image_path: Path | None = None
        if root is not None:
            raw_path = _generic_row_value(row, path_col)
            image_path = (
                root / str(raw_path) if raw_path not in (None, "") else _resolve_image(root, record_id)
            )
        records.append(GroundTruth(record_id, lat, wrap_lon(lon), author, image_path))
    missing = _check_images(records, notes, source) if (root is not None and check_images) else []
    return GroundTruthSet("generic", source, records, missing, False, notes)


def guess_dataset(path: str | os.PathLike[str]) -> str:
    """'im2gps3k' / 'yfcc4k' when the file name says so, else 'generic'."""
    name = Path(path).name.lower()
    if "im2gps3k" in name:
        return "im2gps3k"
    if "yfcc4k" in name:
        return "yfcc4k"
    return "generic"


def resolve_truth_file(dataset_name: str, truth_path_or_dir: str | os.PathLike[str]) -> Path:
    """The metadata file: ``truth_path_or_dir`` itself, or the one dataset file inside that folder."""
    path = Path(truth_path_or_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataFileError(f"ground truth {str(path)!r} does not exist; give the metadata CSV/JSONL or its folder")
    for name in TRUTH_FILE_NAMES.get(dataset_name, ()):
        if (path / name).is_file():
            return path / name
    if dataset_name in TRUTH_FILE_NAMES:
        found = sorted(p for p in path.glob("*.csv") if dataset_name in p.name.lower())
    else:
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl", ".ndjson"))
    if len(found) == 1:
        return found[0]
    wanted = ", ".join(TRUTH_FILE_NAMES.get(dataset_name, ("one .csv or .jsonl file",)))
    listed = f" (found {', '.join(p.name for p in found)})" if found else ""
    raise DataFileError(
        f"cannot tell which file in {str(path)!r} is the {dataset_name} ground truth{listed}; "
        f"expected {wanted}: pass the file itself with --truth"
    )


def load_dataset(
    dataset: str,
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    check_images: bool = True,
) -> GroundTruthSet:
    """Load ``path`` as ``dataset`` (one of :data:`DATASET_NAMES`)."""
    if dataset == "im2gps3k":
        return load_im2gps3k(path, image_root, check_images=check_images)
    if dataset == "yfcc4k":
        return load_yfcc4k(path, image_root, check_images=check_images)
    if dataset == "generic":
        return load_generic(path, image_root, check_images=check_images)
    raise DataFileError(f"unknown dataset {dataset!r} for {path}; choose one of {', '.join(DATASET_NAMES)}")
