"""Connecting to Ray for the Ray engines (``--engine ray``): one place for ``ray.init`` and its errors.

Ray is an optional dependency (``pip install 'geosleuth[ray]'``); it is imported only here and in
the engine modules, inside functions, so the CLI starts as fast without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from geosleuth.errors import ConfigError

INSTALL_HINT = "install it with `pip install 'geosleuth[ray]'` (Ray Data 2.60 or newer)"


def import_ray(*, data: bool = True) -> Any:
    """The ``ray`` module (with Ray Data loaded when ``data``), or a ConfigError saying how to install it."""
    try:
        import ray

        if data:
            import ray.data  # noqa: F401  (index build's pipeline; batch needs Ray core only)
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray ({exc}); {INSTALL_HINT}") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, data: bool = True) -> Iterator[Any]:
    """A Ray connection for one engine run; yields the ``ray`` module (``data``: with Ray Data loaded and
    configured, see :func:`configure_ray_data`; without it the driver saves Ray Data's import).

    - already connected (``ray.init`` was called by the caller, e.g. a notebook or a test): used as is,
      and left open;
    - ``address`` (``HOST:PORT`` of a running cluster's GCS, or ``auto``): connect, disconnect at the end;
    - neither: start a local Ray instance (``num_cpus``: default all cores), stop it at the end.

    Token authentication (on by default in Ray 2.60) reads ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``
    or ``~/.ray/auth_token``, as Ray documents; nothing here logs or stores the token.
    """
    ray = import_ray(data=data)
    if ray.is_initialized():
        if data:
            configure_ray_data()
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        kwargs["address"] = address
    else:
        # A local instance: Ray still opens its ports on every interface (ray.init has no loopback-only
        # mode; it maps 127.0.0.1 to the node's address), so its token authentication is what guards them.
        kwargs["num_cpus"] = num_cpus
    # Ray's usage-stats prompt and upload: never from a library call.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 logs a warning each time it turns its default token authentication on; docs/ray.md says so once.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address!r} ({exc}); start it with `ray start --head` "
            "(docs/ray.md) or leave out --address to run on a local Ray instance"
        ) from None
    try:
        if data:
            configure_ray_data()
        yield ray
    finally:
        ray.shutdown()


def configure_ray_data() -> None:
    """This driver's Ray Data settings: a worker's exception comes back as itself (so a setup error
    stops the run with its own message), and no Ray Data progress bars or per-operator log lines on
    stderr (the CLI draws its own progress)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.raise_original_map_exception = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we know


def gpus_per_actor(ray: Any) -> float:
    """1 GPU per model-holding actor when the cluster has GPUs, else none (CPU actors)."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def default_actors(ray: Any, cpus_per_actor: float) -> int:
    """Actors in the pool: one per GPU on a GPU cluster, else one per ``cpus_per_actor`` CPUs."""
    resources = ray.cluster_resources()
    if resources.get("GPU", 0) > 0:
        return max(1, int(resources["GPU"]))
    return max(1, int(resources.get("CPU", 1) // max(cpus_per_actor, 1e-9)))


def unwrap_task_error(exc: BaseException) -> BaseException:
    """The user exception inside a Ray / Ray Data error (a worker's exception comes back wrapped)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException) and cause is not current:
            current = cause
            continue
        if current.__cause__ is not None:
            current = current.__cause__
            continue
        break
    return current if current is not None else exc
