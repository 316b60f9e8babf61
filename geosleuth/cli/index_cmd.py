"""`geosleuth index ...` commands: build, inspect and search image-gallery stores."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from geosleuth.cli.common import EXIT_PARTIAL_FAILURE, EngineChoice, err_console, state, user_errors

if TYPE_CHECKING:
    from geosleuth.config import Config
    from geosleuth.index.encoders import ImageEncoder
    from geosleuth.index.manifest import BuildFailure, EncoderIdentity
    from geosleuth.types import GalleryNeighbor

app = typer.Typer(no_args_is_help=True)

FAILURES_SHOWN = 10


class IndexTypeChoice(str, Enum):
    flat = "flat"
    ivfsq = "ivfsq"
    ivfpq = "ivfpq"
    hnsw_sq = "hnsw-sq"


def _load_encoder(config: Config) -> ImageEncoder:
    from geosleuth.index.encoders import create_image_encoder

    err_console().print(f"loading image encoder {config.encoders.image_encoder!r} ({config.encoders.image_model}) ...")
    return create_image_encoder(config.encoders)


@app.command("build")
def build(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ..., help="a folder of geotagged photos (GPS from EXIF), or a CSV/Parquet table: IMG_ID, LAT, LON "
        "(+ AUTHOR and MP16-Pro metadata columns)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="store folder to create"),
    index_type: IndexTypeChoice = typer.Option(
        IndexTypeChoice.flat, "--index-type", "-t",
        help="flat: exact (small galleries); ivfsq: ~0.5 B/dim, MP16 scale; ivfpq: smallest, lowest recall; "
        "hnsw-sq: fast, ~1 B/dim",
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="precomputed embeddings (.npy, row i = table row i); X.json next to X.npy names "
        "the encoder (default: the configured one)",
    ),
    image_root: Path | None = typer.Option(None, "--image-root", help="folder the table's image paths are relative to"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted build (or re-index a built one)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing store / unfinished build"),
    shard_size: int = typer.Option(2048, "--shard-size", min=1, help="images per resumable shard"),
    nlist: int | None = typer.Option(None, "--nlist", min=1, help="IVF cells (default: ~N/128, at least ~4*sqrt(N))"),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF cells searched per query (default 16)"),
    train_size: int | None = typer.Option(None, "--train-size", min=1, help="vectors sampled to train the index"),
    drop_shards: bool = typer.Option(False, "--drop-shards", help="delete the cached embeddings after building"),
    engine: EngineChoice = typer.Option(
        EngineChoice.local, "--engine", help="local: embed here; ray: embed shards on a Ray cluster (docs/ray.md)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="with --engine ray: the Ray cluster (HOST:PORT or auto; default: a local Ray)"
    ),
) -> None:
    """Build a gallery store (resumable; unreadable images are reported, not fatal)."""
    from geosleuth.index.build import build_store
    from geosleuth.index.faiss_index import IndexSpec
    from geosleuth.index.manifest import EncoderIdentity
    from geosleuth.index.sources import open_source, read_encoder_sidecar

    config = state(ctx).config()
    console = err_console()
    if address is not None and engine is not EngineChoice.ray:
        console.print("[bold red]error:[/] --address needs --engine ray", highlight=False)
        raise typer.Exit(2)
    with user_errors():
        spec = IndexSpec(index_type=index_type.value, nlist=nlist, nprobe=nprobe, train_size=train_size)
        encoder: ImageEncoder | None = None
        identity: EncoderIdentity | None = None
        if embeddings is not None:
            identity = read_encoder_sidecar(embeddings)
            if identity is None:
                encoder = _load_encoder(config)
                identity = EncoderIdentity.of(encoder)
                console.print(
                    f"[yellow]note:[/] no {embeddings.with_suffix('.json').name} next to the embeddings: assuming "
                    f"they were made by the configured encoder {identity.describe()}",
                    highlight=False,
                )
        gallery = open_source(source, embeddings=embeddings, encoder=identity, image_root=image_root)
        items = len(gallery.items())  # validates the table before any model loads
        if embeddings is None:
            encoder = _load_encoder(config)
        shard_engine = None
        if engine is EngineChoice.ray:
            if encoder is None:
                console.print("[yellow]note:[/] precomputed embeddings: nothing to embed, so Ray is not used")
            else:
                from geosleuth.index.build_ray import RayBuildOptions, ray_shard_engine

                shard_engine = ray_shard_engine(
                    config.encoders, EncoderIdentity.of(encoder), RayBuildOptions(address=address)
                )
        console.print(f"building {spec.index_type} gallery store {str(out)!r} from {items} items")
        try:
            with _ProgressBars(console) as bars:
                report = build_store(
                    gallery, out, encoder=encoder, spec=spec, resume=resume, overwrite=overwrite,
                    shard_size=shard_size, batch_size=config.encoders.batch_size, keep_shards=not drop_shards,
                    progress=bars.update, engine=shard_engine,
                )
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted.[/] Finished shards are saved: run the same command with --resume to continue.",
                highlight=False,
            )
            raise typer.Exit(130) from None
    m = report.manifest
    summary = (
        f"[green]built[/] {str(report.path)!r}: {m.count} images, {m.index_type}, "
        f"{m.build.get('index_bytes', 0) / 1e6:.1f} MB index, {report.seconds:.1f} s"
    )
    if report.reused:
        summary += f" ({report.reused} items' embeddings reused from the interrupted build)"
    console.print(summary, highlight=False)
    if report.failures:
        _print_failures(console, report.failures, len(report.failures), str(report.path))
        raise typer.Exit(EXIT_PARTIAL_FAILURE)


def _print_failures(console: Console, failures: list[BuildFailure], total: int, store: str) -> None:
    console.print(f"[yellow]{total} input(s) could not be added:[/]", highlight=False)
    for failure in failures[:FAILURES_SHOWN]:
        console.print(f"  {failure.source}: {failure.reason}", highlight=False, markup=False)
    if total > FAILURES_SHOWN:
        console.print(f"  ... all of them: geosleuth index info {store} --failures {total}", highlight=False)


class _ProgressBars:
    """Rich progress bars (count, rate, ETA) for the builder's (phase, done, total) callbacks."""

    _LABELS = {"encode": ("embedding images", "img"), "train": ("training the index", "step"),
               "index": ("adding to the index", "vec")}

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{speed:,.1f} {task.fields.get('unit', 'it')}/s")

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, phase: str, done: int, total: int) -> None:
        label, unit = self._LABELS.get(phase, (phase, "it"))
        if phase not in self._tasks:
            # Work reused from an interrupted run counts as done, not as speed.
            self._tasks[phase] = self._progress.add_task(label, total=total, completed=done, unit=unit)
        else:
            self._progress.update(self._tasks[phase], completed=done, total=total)


@app.command("info")
def info(
    store: Path = typer.Argument(..., help="gallery store folder"),
    failures: int = typer.Option(0, "--failures", min=0, help="also list up to this many inputs that failed"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Show what a gallery store holds: encoder, index type and parameters, size, failures."""
    from geosleuth.index.store import GalleryStore

    with user_errors():
        opened = GalleryStore.open(store)
    with opened:
        m = opened.manifest
        failed = opened.failures(limit=failures) if failures else []
        if as_json:
            data = m.model_dump(mode="json")
            if failures:
                data["failure_list"] = [{"source": f.source, "reason": f.reason} for f in failed]
            typer.echo(json.dumps(data, indent=2))
            return
        table = Table("", "", show_header=False, box=None)
        table.add_row("store", str(store))
        table.add_row("images", f"{m.count:,}")
        table.add_row("encoder", f"{m.encoder.name} ({m.encoder.model_id})")
        table.add_row("weights hash", m.encoder.weights_hash)
        table.add_row("embedding", f"{m.dim}-d, {m.metric}, normalised={m.normalized}")
        table.add_row("index", f"{m.index_type} {json.dumps(m.index_params, sort_keys=True)}")
        size = opened.index_bytes()
        table.add_row("index size", f"{size / 1e6:,.1f} MB ({size / max(m.count, 1):,.0f} B/image)")
        table.add_row("source", json.dumps({k: v for k, v in m.source.items() if k != "fingerprint"}))
        table.add_row("failures", str(m.failures))
        table.add_row("created", m.created_at)
        Console().print(table)
        if failed:
            _print_failures(Console(), failed, m.failures, str(store))


@app.command("search")
def search(
    ctx: typer.Context,
    store: Path = typer.Argument(..., help="gallery store folder"),
    image: Path = typer.Argument(..., help="query photo"),
    k: int = typer.Option(10, "-k", "--k", min=1, help="neighbours to show"),
    dissimilar: int = typer.Option(0, "--dissimilar", min=0, help="also show this many least similar images"),
    exclude_author: list[str] = typer.Option([], "--exclude-author", help="leave out this author's images (repeated)"),
    exclude_id: list[str] = typer.Option([], "--exclude-id", help="leave out this gallery id (repeatable)"),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF cells to search (higher: better recall)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Find the gallery images most similar to a photo."""
    from geosleuth.imageio import load_image
    from geosleuth.index.manifest import EncoderIdentity, check_encoder, read_manifest
    from geosleuth.index.store import GalleryStore

    config = state(ctx).config()
    with user_errors():
        manifest = read_manifest(store)  # a wrong store path fails before the model loads
        encoder = _load_encoder(config)
        check_encoder(manifest, EncoderIdentity.of(encoder), store)
        loaded = load_image(image, max_pixels=config.vlm.max_image_pixels)
        query = encoder.encode([loaded.image]).retrieval[0]
        with GalleryStore.open(store, image_encoder=encoder, nprobe=nprobe) as gallery:
            neighbors = gallery.search(query, k, exclude_ids=exclude_id, exclude_authors=exclude_author)
            far = (
                gallery.dissimilar(query, dissimilar, exclude_ids=exclude_id, exclude_authors=exclude_author)
                if dissimilar else []
            )
    if as_json:
        out: dict[str, Any] = {
            "query": str(image), "store": str(store), "neighbors": [n.model_dump(mode="json") for n in neighbors],
        }
        if dissimilar:
            out["dissimilar"] = [n.model_dump(mode="json") for n in far]
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    from geosleuth.geo import ReverseGeocoder

    # Stores without place metadata: name the places for the reader (as the retrieve stage does).
    unnamed = [n for n in neighbors + far if n.place is None]
    for n, place in zip(unnamed, ReverseGeocoder().lookup_many([(n.lat, n.lon) for n in unnamed]), strict=True):
        n.place = place
    console = Console()
    console.print(_neighbor_table(f"{len(neighbors)} most similar to {image}", neighbors))
    if dissimilar:
        console.print(_neighbor_table(f"{len(far)} least similar", far))


def _neighbor_table(title: str, neighbors: list[GalleryNeighbor]) -> Table:
    table = Table("#", "similarity", "lat", "lon", "place", "author", "id", title=title)
    for rank, n in enumerate(neighbors, 1):
        table.add_row(
            str(rank), f"{n.similarity:.4f}", f"{n.lat:.5f}", f"{n.lon:.5f}",
            n.place.hierarchy() if n.place else "", str(n.metadata.get("author") or ""), n.id,
        )
    return table
