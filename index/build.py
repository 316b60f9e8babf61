"""Build a gallery store from a gallery source, resumably.

Two phases:

1. **encode** (image sources only): items are taken in fixed shards of ``shard_size``; each shard's
   images are loaded (in a few threads), embedded, and written to ``STORE/build/shard-NNNNNN.npz``
   atomically (temporary file, then rename). Unreadable images, and folder photos without EXIF GPS,
   are recorded with the reason in ``shard-NNNNNN.failures.json`` and the build goes on. After a
   crash, re-running with ``resume=True`` (``--resume``) re-encodes only the missing shards; the
   plan (encoder, source fingerprint, shard size) must be unchanged.
2. **index**: embeddings are read back shard by shard (or from the memory-mapped ``.npy`` for
   precomputed embeddings), a training sample is drawn (seeded), the FAISS index is trained and
   filled, and ``index.faiss``, ``metadata.sqlite`` and finally ``manifest.json`` are written.
   This phase is not checkpointed: it is quick next to encoding, and reruns from the shards.

Shards are kept after a successful build (``keep_shards``), so ``--resume`` on a finished store
re-indexes (e.g. with another ``--index-type``) without re-encoding.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geosleuth.errors import GalleryIndexError, ImageLoadError
from geosleuth.fileio import atomic_write_json, atomic_writer
from geosleuth.index.faiss_index import IndexSpec, create_index
from geosleuth.index.manifest import (
    BUILD_DIR,
    INDEX_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    STORE_FORMAT,
    BuildFailure,
    EncoderIdentity,
    EncoderRecord,
    StoreManifest,
)
from geosleuth.index.sources import EmbeddingsSource, GallerySource, metadata_records

if TYPE_CHECKING:
    import pandas as pd

    from geosleuth.imageio import LoadedImage
    from geosleuth.index.encoders import ImageEncoder

DEFAULT_SHARD_SIZE = 2048
DEFAULT_BATCH_SIZE = 32
# Gallery photos are decoded at most this large (JPEGs decode at reduced scale): CLIP sees 224 px,
# and the query side (perceive) uses the same default cap.
GALLERY_MAX_PIXELS = 1024 * 1024
PLAN_FILE = "plan.json"
PHASE_ENCODE = "encode"
PHASE_TRAIN = "train"
PHASE_INDEX = "index"

# (phase, done, total): called as work progresses; the CLI draws rich progress bars from it.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class BuildReport:
    path: Path
    manifest: StoreManifest
    failures: list[BuildFailure] = field(default_factory=list)
    encoded: int = 0  # items embedded in this run
    reused: int = 0  # items whose embeddings came from an earlier (interrupted) run's shards
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return self.manifest.count


@dataclass
class _Chunk:
    positions: np.ndarray  # item positions in the source table, int64
    vectors: np.ndarray  # (n, D) float32, unit rows
    lat: np.ndarray
    lon: np.ndarray


def build_store(
    source: GallerySource,
    out: str | Path,
    *,
    encoder: ImageEncoder | None = None,
    spec: IndexSpec | None = None,
    resume: bool = False,
    overwrite: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    load_workers: int = 2,
    max_pixels: int | None = GALLERY_MAX_PIXELS,
    keep_shards: bool = True,
    progress: ProgressCallback | None = None,
    after_shard: Callable[[int], None] | None = None,
    engine: ShardEngine | None = None,
) -> BuildReport:
    """Build (or resume building) the gallery store ``out`` from ``source``.

    ``encoder`` embeds the images of folder/table sources; precomputed embeddings carry their own
    encoder identity (a given ``encoder`` must match it). ``after_shard(i)`` is called once shard
    ``i`` is safely on disk (tests use it to simulate a crash). ``engine`` runs the encode phase
    elsewhere (``index/build_ray.py``); the index phase and the store are the same either way.
    """
    started = time.perf_counter()
    spec = spec or IndexSpec()
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1 (got {shard_size}, {batch_size})")
    report_progress: ProgressCallback = progress or (lambda phase, done, total: None)
    root = Path(out)
    identity = _encoder_identity(source, encoder)
    items = source.items()
    plan = {
        "format_version": STORE_FORMAT,
        "encoder": asdict(identity),
        "source": source.describe(),
        "fingerprint": source.fingerprint(),
        "shard_size": shard_size,
        "items": len(items),
    }
    _prepare(root, plan, resume=resume, overwrite=overwrite)
    work = root / BUILD_DIR

    encoded = reused = 0
    if isinstance(source, EmbeddingsSource):
        chunks = _EmbeddingChunks(source, items, shard_size)
    else:
        assert encoder is not None  # _encoder_identity checked
        encoded, reused = _encode_shards(
            items, work, encoder, shard_size=shard_size, batch_size=batch_size, load_workers=load_workers,
            max_pixels=max_pixels, progress=report_progress, after_shard=after_shard, engine=engine,
        )
        chunks = _ShardChunks(work, len(items), shard_size)

    manifest = _index_and_write(root, identity, spec, items, chunks, source, plan, report_progress)
    failures = chunks.failures
    manifest.build["seconds"] = round(time.perf_counter() - started, 3)
    _write_json_atomic(root / MANIFEST_FILE, manifest.model_dump(mode="json"))
    if not keep_shards:
        shutil.rmtree(work, ignore_errors=True)
    return BuildReport(
        path=root, manifest=manifest, failures=failures, encoded=encoded, reused=reused,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Preparing the folder


def _encoder_identity(source: GallerySource, encoder: ImageEncoder | None) -> EncoderIdentity:
    if isinstance(source, EmbeddingsSource):
        if encoder is not None and not EncoderIdentity.of(encoder).matches(source.encoder):
            raise GalleryIndexError(
                f"precomputed embeddings {str(source.embeddings_path)!r} were made by {source.encoder.describe()}, "
                f"not by the given encoder {EncoderIdentity.of(encoder).describe()}"
            )
        return source.encoder
    if encoder is None:
        raise GalleryIndexError(f"building a gallery from images ({source.describe()['path']}) needs an image encoder")
    return EncoderIdentity.of(encoder)


def _prepare(root: Path, plan: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Make ``root`` ready for this build (or refuse, saying why and what to do)."""
    work = root / BUILD_DIR
    if root.exists() and not root.is_dir():
        raise GalleryIndexError(f"gallery store path {str(root)!r} is a file; choose a folder path")
    ours = [root / MANIFEST_FILE, root / INDEX_FILE, root / METADATA_FILE, work]
    if overwrite:
        for path in ours:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    plan_file = work / PLAN_FILE
    complete = (root / MANIFEST_FILE).is_file()
    if plan_file.is_file():
        if not resume:
            done = len(list(work.glob("shard-*.npz")))
            what = "a gallery store" if complete else f"an unfinished build ({done} shards done)"
            raise GalleryIndexError(
                f"{str(root)!r} already holds {what}; pass --resume to continue/re-index it from its shards, "
                "or --overwrite to start again"
            )
        try:
            previous = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise GalleryIndexError(
                f"cannot resume: {str(plan_file)!r} is unreadable ({exc}); use --overwrite"
            ) from None
        differs = [key for key in plan if key != "source" and previous.get(key) != plan[key]]
        if differs:
            raise GalleryIndexError(
                f"cannot resume the build in {str(root)!r}: {', '.join(differs)} changed since it started "
                f"(was {', '.join(repr(previous.get(k)) for k in differs)}); use --overwrite to start again"
            )
        # A re-index must not leave the old manifest next to a half-written index.
        (root / MANIFEST_FILE).unlink(missing_ok=True)
        return
    if complete:
        raise GalleryIndexError(f"{str(root)!r} already holds a gallery store; pass --overwrite to replace it")
    if root.is_dir() and any(root.iterdir()):
        raise GalleryIndexError(
            f"{str(root)!r} is not empty and is not a gallery store; choose a new or empty folder for the store"
        )
    work.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(plan_file, plan)


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(path, data, sort_keys=True, ensure_ascii=True)


# ---------------------------------------------------------------------------------------------
# Phase 1: encode images into shards


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}"


@dataclass
class EncodedShard:
    """One shard's embeddings (rows = ``positions`` in the source table) and its failures."""

    positions: np.ndarray  # int64
    vectors: np.ndarray  # (n, D) float32
    lat: np.ndarray
    lon: np.ndarray
    failures: list[BuildFailure]


@dataclass(frozen=True)
class ShardPlan:
    """What an encode engine needs to embed the missing shards (``todo``) of a build."""

    items: pd.DataFrame  # the source table: path, lat, lon (NaN: take the photo's EXIF GPS)
    work: Path  # STORE/build: where shards are committed
    todo: list[int]
    shard_size: int
    batch_size: int
    max_pixels: int | None

    def positions(self, s: int) -> np.ndarray:
        return np.arange(s * self.shard_size, min(len(self.items), (s + 1) * self.shard_size))


# Runs the encode phase elsewhere (e.g. index/build_ray.py): embeds plan.todo, commits each shard
# with write_shard, and yields each shard's id once it is committed.
ShardEngine = Callable[[ShardPlan], Iterator[int]]


def _encode_shards(
    items: pd.DataFrame,
    work: Path,
    encoder: ImageEncoder,
    *,
    shard_size: int,
    batch_size: int,
    load_workers: int,
    max_pixels: int | None,
    progress: ProgressCallback,
    after_shard: Callable[[int], None] | None,
    engine: ShardEngine | None = None,
) -> tuple[int, int]:
    total = len(items)
    n_shards = -(-total // shard_size)
    todo = [s for s in range(n_shards) if not (work / f"{_shard_name(s)}.npz").is_file()]
    reused = total - sum(min(shard_size, total - s * shard_size) for s in todo)
    done = reused
    progress(PHASE_ENCODE, done, total)
    plan = ShardPlan(items, work, todo, shard_size, batch_size, max_pixels)
    if engine is not None:
        for s in engine(plan):
            done += len(plan.positions(s))
            progress(PHASE_ENCODE, done, total)
            if after_shard is not None:
                after_shard(s)
        return total - reused, reused
    paths = items["path"].tolist()
    known_lat = items["lat"].to_numpy()
    known_lon = items["lon"].to_numpy()

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(PHASE_ENCODE, done, total)

    with ThreadPoolExecutor(max_workers=max(1, load_workers), thread_name_prefix="gallery-load") as pool:
        for s in todo:
            positions = plan.positions(s)
            shard = encode_shard(
                positions, [paths[p] for p in positions], known_lat[positions], known_lon[positions], encoder,
                batch_size=batch_size, pool=pool, max_pixels=max_pixels, on_batch=advance,
            )
            write_shard(work, s, shard)
            if after_shard is not None:
                after_shard(s)
    return total - reused, reused


def encode_shard(
    positions: np.ndarray,
    paths: list[Any],
    known_lat: np.ndarray,
    known_lon: np.ndarray,
    encoder: ImageEncoder,
    *,
    batch_size: int,
    pool: ThreadPoolExecutor,
    max_pixels: int | None,
    on_batch: Callable[[int], None] | None = None,
) -> EncodedShard:
    """Load and embed one shard's images (``paths``/``known_lat``/``known_lon`` aligned with
    ``positions``; a NaN latitude means: take the photo's EXIF GPS), reading the next batch while
    one is embedded. Unreadable images and photos without a position become failures."""
    local = np.arange(len(positions))
    batches = [local[i : i + batch_size] for i in range(0, len(local), batch_size)]
    kept: list[int] = []
    lats: list[float] = []
    lons: list[float] = []
    vectors: list[np.ndarray] = []
    failures: list[BuildFailure] = []
    pending = _submit(pool, batches[0], paths, max_pixels) if batches else []
    for b in range(len(batches)):
        loaded = [f.result() for f in pending]
        # Read the next batch while this one is embedded.
        pending = _submit(pool, batches[b + 1], paths, max_pixels) if b + 1 < len(batches) else []
        images = []
        for i, result in zip(batches[b], loaded, strict=True):
            if isinstance(result, BuildFailure):
                failures.append(result)
                continue
            lat, lon = float(known_lat[i]), float(known_lon[i])
            if np.isnan(lat):  # image folders: the position is in the photo's EXIF
                gps = result.ref.exif.gps if result.ref.exif is not None else None
                if gps is None:
                    failures.append(BuildFailure(str(paths[i]), "no GPS position in the photo's EXIF data"))
                    continue
                lat, lon = gps.lat, gps.lon
            kept.append(int(positions[i]))
            lats.append(lat)
            lons.append(lon)
            images.append(result.image)
        if images:
            vectors.append(np.asarray(encoder.encode(images).retrieval, dtype=np.float32))
        if on_batch is not None:
            on_batch(len(batches[b]))
    embedded = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), dtype=np.float32)
    return EncodedShard(np.asarray(kept, dtype=np.int64), embedded, np.asarray(lats), np.asarray(lons), failures)


def _submit(pool: ThreadPoolExecutor, positions: np.ndarray, paths: list[Any], max_pixels: int | None) -> list[Future]:
    return [pool.submit(_load, paths[p], max_pixels) for p in positions]


def _load(path: str, max_pixels: int | None) -> LoadedImage | BuildFailure:
    from geosleuth.imageio import load_image

    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageLoadError as exc:
        return BuildFailure(str(path), exc.reason)


def write_shard(work: Path, s: int, shard: EncodedShard) -> None:
    """Commit shard ``s``: its failures, then its embeddings atomically (the ``.npz`` marks it done)."""
    name = _shard_name(s)
    _write_json_atomic(work / f"{name}.failures.json", [asdict(f) for f in shard.failures])
    with atomic_writer(work / f"{name}.npz", binary=True) as fh:  # the .npz appearing marks the shard done
        np.savez(
            fh, positions=shard.positions, vectors=shard.vectors, lat=shard.lat.astype(np.float64),
            lon=shard.lon.astype(np.float64),
        )


# ---------------------------------------------------------------------------------------------
# Phase 2: train, add, write


class _ShardChunks:
    """Embeddings read back from the encode phase's shards, in source order."""

    def __init__(self, work: Path, total: int, shard_size: int) -> None:
        self.work = work
        self.n_shards = -(-total // shard_size)
        self.failures: list[BuildFailure] = []
        for s in range(self.n_shards):
            file = work / f"{_shard_name(s)}.failures.json"
            self.failures.extend(BuildFailure(**f) for f in json.loads(file.read_text(encoding="utf-8")))

    def counts(self) -> list[int]:
        out = []
        for s in range(self.n_shards):
            with np.load(self.work / f"{_shard_name(s)}.npz") as data:
                out.append(len(data["positions"]))
        return out

    def __iter__(self) -> Iterator[_Chunk]:
        for s in range(self.n_shards):
            with np.load(self.work / f"{_shard_name(s)}.npz") as data:
                vectors = data["vectors"]
                bad = ~np.isfinite(vectors).all(axis=1) | (np.linalg.norm(vectors, axis=1) == 0)
                if bad.any():  # the encoder produced garbage: never index it silently
                    raise GalleryIndexError(
                        f"shard {s} holds {int(bad.sum())} zero or non-finite embeddings; the image encoder is "
                        "broken. Fix it and rebuild with --overwrite"
                    )
                yield _Chunk(data["positions"], _unit(vectors), data["lat"], data["lon"])


class _EmbeddingChunks:
    """Precomputed embeddings, memory-mapped, in slices; unusable rows become failures."""

    def __init__(self, source: EmbeddingsSource, items: pd.DataFrame, chunk_size: int) -> None:
        self.array = source.array()
        self.path = str(source.embeddings_path)
        self.lat = items["lat"].to_numpy()
        self.lon = items["lon"].to_numpy()
        self.ids = items["id"].tolist()
        self.chunk_size = max(chunk_size, 65536)
        self.failures: list[BuildFailure] = []
        self._checked = False

    def counts(self) -> list[int]:
        return [len(c.positions) for c in self]  # also records the unusable rows as failures

    def __iter__(self) -> Iterator[_Chunk]:
        for start in range(0, len(self.array), self.chunk_size):
            block = np.asarray(self.array[start : start + self.chunk_size], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1)
            ok = np.isfinite(block).all(axis=1) & (norms > 0)
            positions = np.arange(start, start + len(block))
            if not self._checked:
                for p in positions[~ok]:
                    self.failures.append(
                        BuildFailure(f"{self.path} row {p + 1} (id {self.ids[p]})", "embedding is zero or not finite")
                    )
            yield _Chunk(positions[ok], _unit(block[ok]), self.lat[positions[ok]], self.lon[positions[ok]])
        self._checked = True


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _index_and_write(
    root: Path,
    identity: EncoderIdentity,
    spec: IndexSpec,
    items: pd.DataFrame,
    chunks: _ShardChunks | _EmbeddingChunks,
    source: GallerySource,
    plan: dict[str, Any],
    progress: ProgressCallback,
) -> StoreManifest:
    import faiss

    counts = chunks.counts()
    count = sum(counts)
    if count == 0:
        first = chunks.failures[0] if chunks.failures else None
        hint = f" (first: {first.source}: {first.reason})" if first else ""
        raise GalleryIndexError(f"no usable images in {source.describe()['path']}: all {len(items)} failed{hint}")
    params = spec.resolve(count, identity.dim)
    index = create_index(spec.index_type, identity.dim, {**params, "seed": spec.seed})
    if not index.is_trained:
        progress(PHASE_TRAIN, 0, 1)
        index.train(_training_sample(chunks, counts, int(params["train_size"]), spec.seed))
        progress(PHASE_TRAIN, 1, 1)
    if spec.index_type == "hnsw-sq":
        index.hnsw.efSearch = int(params["ef_search"])

    db_tmp = root / (METADATA_FILE + ".tmp")
    db_tmp.unlink(missing_ok=True)
    db = _create_metadata_db(db_tmp)
    added = 0
    progress(PHASE_INDEX, 0, count)
    try:
        for chunk in chunks:
            if len(chunk.positions) == 0:
                continue
            index.add(chunk.vectors)
            _insert_items(db, added, items.iloc[chunk.positions], chunk.lat, chunk.lon)
            added += len(chunk.positions)
            progress(PHASE_INDEX, added, count)
        db.executemany(
            "INSERT INTO failures(source, reason) VALUES (?, ?)", [(f.source, f.reason) for f in chunks.failures]
        )
        db.execute("CREATE INDEX items_author ON items(author)")
        db.commit()
    finally:
        db.close()
    if index.ntotal != count:  # pragma: no cover - would be a bug in this module
        raise GalleryIndexError(f"internal error: indexed {index.ntotal} vectors, expected {count}")

    index_tmp = root / (INDEX_FILE + ".tmp")
    faiss.write_index(index, str(index_tmp))
    os.replace(index_tmp, root / INDEX_FILE)
    os.replace(db_tmp, root / METADATA_FILE)
    return StoreManifest(
        encoder=EncoderRecord(name=identity.name, model_id=identity.model_id, weights_hash=identity.weights_hash),
        dim=identity.dim,
        index_type=spec.index_type,
        index_params=params,
        count=count,
        failures=len(chunks.failures),
        source={**source.describe(), "fingerprint": plan["fingerprint"]},
        build={
            "shard_size": plan["shard_size"],
            "seed": spec.seed,
            "faiss_version": faiss.__version__,
            "geosleuth_version": _version(),
            "index_bytes": (root / INDEX_FILE).stat().st_size,
        },
    )


def _training_sample(chunks: _ShardChunks | _EmbeddingChunks, counts: list[int], size: int, seed: int) -> np.ndarray:
    """``size`` vectors drawn uniformly (seeded) from all usable vectors, gathered chunk by chunk."""
    total = sum(counts)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))
    parts = []
    offset = 0
    for chunk, n in zip(chunks, counts, strict=True):
        lo, hi = np.searchsorted(chosen, [offset, offset + n])
        if hi > lo:
            parts.append(chunk.vectors[chosen[lo:hi] - offset])
        offset += n
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _create_metadata_db(path: Path) -> Any:
    import sqlite3

    db = sqlite3.connect(path)
    # Crash safety comes from writing a temporary file and renaming it, not from the journal.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute(
        "CREATE TABLE items (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, lat REAL NOT NULL, "
        "lon REAL NOT NULL, author TEXT, metadata TEXT NOT NULL)"
    )
    db.execute("CREATE TABLE failures (source TEXT NOT NULL, reason TEXT NOT NULL)")
    return db


def _insert_items(db: Any, first_row: int, rows: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> None:
    metadata = metadata_records(rows)
    db.executemany(
        "INSERT INTO items(row, id, lat, lon, author, metadata) VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                first_row + i, str(item_id), float(la), float(lo), author if isinstance(author, str) else None,
                json.dumps(meta, ensure_ascii=False),
            )
            for i, (item_id, author, la, lo, meta) in enumerate(
                zip(rows["id"].tolist(), rows["author"].tolist(), lat, lon, metadata, strict=True)
            )
        ),
    )


def _version() -> str:
    from geosleuth import __version__

    return __version__
