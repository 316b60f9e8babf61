"""The gallery build's encode phase: images embedded into shards committed on disk, and read back.

Items are taken in fixed shards of ``shard_size``; each shard's images are loaded (in a few
threads), embedded, and written to ``STORE/build/shard-NNNNNN.npz`` atomically (temporary file, then
rename): the ``.npz`` appearing marks the shard done. Unreadable images, and folder photos without
EXIF GPS, are recorded with the reason in ``shard-NNNNNN.failures.json``. A :data:`ShardEngine`
(``index/build_ray.py``) may encode the shards elsewhere; they are committed the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geosleuth.errors import GalleryIndexError, ImageLoadError
from geosleuth.fileio import atomic_write_json, atomic_writer
from geosleuth.index.build_index import IndexChunk, unit_rows
from geosleuth.index.manifest import BuildFailure

if TYPE_CHECKING:
    import pandas as pd

    from geosleuth.imageio import LoadedImage
    from geosleuth.index.encoders import ImageEncoder


def shard_name(i: int) -> str:
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


def encode_shards(
    items: pd.DataFrame,
    work: Path,
    encoder: ImageEncoder,
    *,
    shard_size: int,
    batch_size: int,
    load_workers: int,
    max_pixels: int | None,
    progress: Callable[[int, int], None],
    after_shard: Callable[[int], None] | None,
    engine: ShardEngine | None = None,
) -> tuple[int, int]:
    """Encode the shards not yet on disk; ``(encoded, reused)`` item counts. ``progress(done, total)``
    counts items, reused ones included; ``after_shard(i)`` runs once shard ``i`` is committed."""
    total = len(items)
    n_shards = -(-total // shard_size)
    todo = [s for s in range(n_shards) if not (work / f"{shard_name(s)}.npz").is_file()]
    reused = total - sum(min(shard_size, total - s * shard_size) for s in todo)
    done = reused
    progress(done, total)
    plan = ShardPlan(items, work, todo, shard_size, batch_size, max_pixels)
    if engine is not None:
        for s in engine(plan):
            done += len(plan.positions(s))
            progress(done, total)
            if after_shard is not None:
                after_shard(s)
        return total - reused, reused
    paths = items["path"].tolist()
    known_lat = items["lat"].to_numpy()
    known_lon = items["lon"].to_numpy()

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

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
    name = shard_name(s)
    atomic_write_json(work / f"{name}.failures.json", [asdict(f) for f in shard.failures], sort_keys=True,
                      ensure_ascii=True)
    with atomic_writer(work / f"{name}.npz", binary=True) as fh:  # the .npz appearing marks the shard done
        np.savez(
            fh, positions=shard.positions, vectors=shard.vectors, lat=shard.lat.astype(np.float64),
            lon=shard.lon.astype(np.float64),
        )


class ShardChunks:
    """Embeddings read back from the encode phase's shards, in source order."""

    def __init__(self, work: Path, total: int, shard_size: int) -> None:
        self.work = work
        self.n_shards = -(-total // shard_size)
        self.failures: list[BuildFailure] = []
        for s in range(self.n_shards):
            file = work / f"{shard_name(s)}.failures.json"
            self.failures.extend(BuildFailure(**f) for f in json.loads(file.read_text(encoding="utf-8")))

    def counts(self) -> list[int]:
        out = []
        for s in range(self.n_shards):
            with np.load(self.work / f"{shard_name(s)}.npz") as data:
                out.append(len(data["positions"]))
        return out

    def __iter__(self) -> Iterator[IndexChunk]:
        for s in range(self.n_shards):
            with np.load(self.work / f"{shard_name(s)}.npz") as data:
                vectors = data["vectors"]
                bad = ~np.isfinite(vectors).all(axis=1) | (np.linalg.norm(vectors, axis=1) == 0)
                if bad.any():  # the encoder produced garbage: never index it silently
                    raise GalleryIndexError(
                        f"shard {s} holds {int(bad.sum())} zero or non-finite embeddings; the image encoder is "
                        "broken. Fix it and rebuild with --overwrite"
                    )
                yield IndexChunk(data["positions"], unit_rows(vectors), data["lat"], data["lon"])
