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
   (:mod:`.build_index`)

Shards are kept after a successful build (``keep_shards``), so ``--resume`` on a finished store
re-indexes (e.g. with another ``--index-type``) without re-encoding.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.errors import GalleryIndexError
from geosleuth.fileio import atomic_write_json
from geosleuth.index.build_index import EmbeddingChunks, index_and_write
from geosleuth.index.build_shards import ShardChunks, ShardEngine, encode_shards
from geosleuth.index.faiss_index import IndexSpec
from geosleuth.index.manifest import (
    BUILD_DIR,
    INDEX_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    STORE_FORMAT,
    BuildFailure,
    EncoderIdentity,
    StoreManifest,
)
from geosleuth.index.sources import EmbeddingsSource, GallerySource

if TYPE_CHECKING:
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
        chunks: ShardChunks | EmbeddingChunks = EmbeddingChunks(source, items, shard_size)
    else:
        assert encoder is not None  # _encoder_identity checked
        encoded, reused = encode_shards(
            items, work, encoder, shard_size=shard_size, batch_size=batch_size, load_workers=load_workers,
            max_pixels=max_pixels, progress=lambda done, total: report_progress(PHASE_ENCODE, done, total),
            after_shard=after_shard, engine=engine,
        )
        chunks = ShardChunks(work, len(items), shard_size)

    manifest = index_and_write(
        root, identity, spec, items, chunks, source, plan,
        on_train=lambda done, total: report_progress(PHASE_TRAIN, done, total),
        on_index=lambda done, total: report_progress(PHASE_INDEX, done, total),
    )
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
