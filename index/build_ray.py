"""Ray Data engine for the encode phase of ``geosleuth index build --engine ray``.

The builder (``index/build.py``) stays in charge: it plans the shards, skips the ones already
committed (``--resume``), and after encoding trains and fills one FAISS index and writes the store
and its manifest exactly as the local build does. This module only embeds the missing shards in
parallel::

    missing shard ids (driver) -> EncodeActor pool (image encoder loaded once per actor, one GPU per
    actor when the cluster has GPUs; images read and embedded with the local builder's encode_shard)
    -> driver: write_shard (the same atomic .npz commit) -> progress

Embeddings come back to the driver, so only the images need to be readable on every node; the
store is written where the driver runs. A killed driver loses only uncommitted shards (rerun with
``--resume``); a killed actor's shard is re-run by Ray Data.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from geosleuth.config import EncoderConfig
from geosleuth.errors import GalleryIndexError, GeosleuthError
from geosleuth.index.build_shards import ShardPlan, encode_shard, write_shard
from geosleuth.index.manifest import EncoderIdentity


@dataclass(frozen=True)
class RayBuildOptions:
    """``address`` of a running cluster (None: a local Ray instance); ``actors`` in the
    pool (None: one per GPU, else one per ``cpus_per_actor`` CPUs); image-loading threads per actor."""

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    load_workers: int = 2
    local_cpus: int | None = None


class EncodeActor:
    """One Ray actor: the image encoder, loaded once; called on shards (rows: shard id, its table
    positions, paths and known positions), returns each shard's embeddings, pickled."""

    def __init__(
        self, encoder_config: dict[str, Any], identity: dict[str, Any], batch_size: int, max_pixels: int | None,
        load_workers: int,
    ) -> None:
        self._setup_error: GeosleuthError | None = None
        try:
            self._encoder = _load_encoder(encoder_config, EncoderIdentity(**identity))
        except GeosleuthError as exc:
            # Raised from __call__ instead: Ray reports a failed constructor as a bare ActorDiedError
            # (and retries it), while a task's exception reaches the driver as itself.
            self._setup_error = exc
        self._batch_size = batch_size
        self._max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=max(1, load_workers), thread_name_prefix="gallery-load")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        if self._setup_error is not None:
            raise self._setup_error
        shards, payloads = [], []
        for s, positions, paths, lat, lon in zip(
            batch["shard"], batch["positions"], batch["paths"], batch["lat"], batch["lon"], strict=True
        ):
            encoded = encode_shard(
                np.asarray(positions, dtype=np.int64), list(paths), np.asarray(lat, dtype=np.float64),
                np.asarray(lon, dtype=np.float64), self._encoder, batch_size=self._batch_size, pool=self._pool,
                max_pixels=self._max_pixels,
            )
            shards.append(int(s))
            payloads.append(pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL))
        return {"shard": shards, "encoded": payloads}


def _load_encoder(encoder_config: dict[str, Any], expected: EncoderIdentity) -> Any:
    from geosleuth.index.encoders import create_image_encoder

    encoder = create_image_encoder(EncoderConfig.model_validate(encoder_config))
    if not EncoderIdentity.of(encoder).matches(expected):
        # Another model or other weights on this node: its vectors would not match the store's.
        raise GalleryIndexError(
            f"a Ray worker loaded {EncoderIdentity.of(encoder).describe()}, but the build uses "
            f"{expected.describe()}; install the same weights on every node (geosleuth models pull)"
        )
    return encoder


def ray_shard_engine(
    encoder_config: EncoderConfig, identity: EncoderIdentity, options: RayBuildOptions | None = None
) -> Any:
    """A :data:`geosleuth.index.build_shards.ShardEngine` running on Ray; pass it to ``build_store(engine=...)``."""
    options = options or RayBuildOptions()

    def run(plan: ShardPlan) -> Iterator[int]:
        if not plan.todo:
            return
        from geosleuth.ray_session import default_actors, gpus_per_actor, ray_session, unwrap_task_error

        paths = plan.items["path"].astype(str).tolist()
        lat, lon = plan.items["lat"].to_numpy(), plan.items["lon"].to_numpy()
        rows = []
        for s in plan.todo:
            p = plan.positions(s)
            rows.append({"shard": s, "positions": p.tolist(), "paths": [paths[i] for i in p],
                         "lat": lat[p].tolist(), "lon": lon[p].tolist()})
        with ray_session(options.address, num_cpus=options.local_cpus) as ray:
            actors = min(options.actors or default_actors(ray, options.cpus_per_actor), len(rows))
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                EncodeActor,
                fn_constructor_kwargs={
                    "encoder_config": encoder_config.model_dump(mode="json"), "identity": asdict(identity),
                    "batch_size": plan.batch_size, "max_pixels": plan.max_pixels, "load_workers": options.load_workers,
                },
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=options.cpus_per_actor,
                num_gpus=gpus_per_actor(ray),
            )
            try:
                for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    for s, payload in zip(block["shard"], block["encoded"], strict=True):
                        write_shard(plan.work, int(s), pickle.loads(payload))
                        yield int(s)
            except Exception as exc:
                cause = unwrap_task_error(exc)  # an actor's exception arrives wrapped in Ray's RayTaskError
                if isinstance(cause, GeosleuthError) and cause is not exc:
                    raise cause from None
                raise

    return run
