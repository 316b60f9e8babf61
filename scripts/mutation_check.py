"""Mutation check: do the tests still catch plausible silent bugs on the lines that matter most?

Each entry of ``MUTATIONS`` names a file, an exact snippet of it, a mutated snippet (a small bug of
the kind that gives a plausible but wrong answer) and the tests expected to catch it. The check
copies the source tree to a temporary folder, confirms that the named tests pass on the unmodified
copy (the baseline), then applies one mutation at a time to the copy and runs its tests. Your
working tree is never modified; the copy is deleted at the end (``--keep`` keeps it).

A mutation is **caught** when its tests fail, **survived** when they all pass. The check is slow
(one pytest process per mutation, about 2-5 minutes in all on 2 cores), so it is not part of the
test suite: run it when you change a line listed here, or its tests::

    .venv/bin/python scripts/mutation_check.py              # all entries
    .venv/bin/python scripts/mutation_check.py --only rva-cap-edge --only batch-fsync
    .venv/bin/python scripts/mutation_check.py --list

Exit codes: 0 every mutation was caught; 1 at least one survived; 2 the check itself could not be
trusted (a snippet no longer occurs exactly once in its file, a test path is gone, the baseline
failed, or the copy did not import its own code). When code moves, update the entry's ``file`` /
``original`` / ``tests``; keep the mutated behaviour the same.

The copy imports as ``geosleuth`` through a ``sitecustomize`` placed first on ``PYTHONPATH`` that
maps the package folders of ``pyproject.toml`` (``[tool.setuptools] package-dir``) to the copy,
ahead of the editable install's finder; child processes the tests start inherit it. Bytecode
writing is off in the copy, so a mutated module is never served from a stale ``.pyc``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PER_MUTATION_TIMEOUT_S = 600
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build", "dist"
)


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest paths or node ids, relative to the repository root
    why: str  # the wrong answer this bug would give


# fmt: off
MUTATIONS: tuple[Mutation, ...] = (
    # --- the five survivors of issue 17 -------------------------------------------------------------
    Mutation(
        "encoder-latlon-order", "index/encoders.py",
        "coords = np.stack([lat, lon], axis=1).astype(np.float32)",
        "coords = np.stack([lon, lat], axis=1).astype(np.float32)",
        ("tests/index/test_encoders.py",),
        "GeoCLIP fed (lon, lat): every GeoCLIP score computed at the wrong place",
    ),
    Mutation(
        "decide-winner-cluster", "agent/decide.py",
        "winner = evidence.clusters[by_mass[0]]",
        "winner = evidence.clusters[by_mass[-1]]",
        ("tests/agent/test_decide.py", "tests/eval/test_presets.py"),
        "the answer taken from the lightest cluster instead of the heaviest",
    ),
    Mutation(
        "decide-answer-candidate", "agent/decide.py",
        "        lat=winner.lat,\n        lon=winner.lon,",
        "        lat=alternatives[-1].lat,\n        lon=alternatives[-1].lon,",
        ("tests/agent/test_decide.py", "tests/eval/test_presets.py"),
        "the answer taken from the last alternative's lead instead of the winning cluster's centre",
    ),
    Mutation(
        "batch-resume-located", "agent/batch/results.py",
        '    if prediction.get("lat") is None:\n        return "failed"\n',
        '    if prediction.get("lat") is None:\n        return "ok"\n',
        ("tests/batch", "tests/cli/test_batch_cmd.py"),
        "after --resume, lines without a coordinate count as located",
    ),
    Mutation(
        "batch-fsync", "agent/batch/results.py",
        "        if self.fsync:\n            os.fsync(self._handle.fileno())",
        "        if self.fsync:\n            pass",
        ("tests/batch", "tests/cli/test_batch_cmd.py"),
        "a result line counted as done before it is on disk (lost on power failure)",
    ),
    Mutation(
        "rva-cap-edge", "eval/metrics.py",
        "inside = dist < radius",
        "inside = dist <= radius",
        ("tests/eval/test_eval_metrics.py",),
        "recall vs area counts a candidate exactly on the cap's edge as inside",
    ),
    # --- more critical lines ------------------------------------------------------------------------
    Mutation(
        "accuracy-threshold-strict", "eval/metrics.py",
        "return np.less(d, ",
        "return np.less_equal(d, ",
        ("tests/eval/test_eval_metrics.py",),
        "accuracy within d km counts predictions exactly d km away (published benchmarks use <)",
    ),
    Mutation(
        "geoscore-failures-zero", "eval/metrics.py",
        "scores = np.where(ok, geoscore(np.nan_to_num(dist, nan=0.0)), 0.0)",
        "scores = geoscore(np.nan_to_num(dist, nan=0.0))",
        ("tests/eval/test_eval_metrics.py",),
        "a failed image scores a perfect GeoScore instead of 0",
    ),
    Mutation(
        "haversine-latitude-factor", "geosleuth/geo/distance.py",
        "a = np.sin(dlat / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2.0) ** 2",
        "a = np.sin(dlat / 2.0) ** 2 + np.sin(dlon / 2.0) ** 2",
        ("tests/core/test_geo.py",),
        "east-west distances away from the equator overestimated (a degree of longitude taken as at the equator)",
    ),
    Mutation(
        "swapped-header-detection", "eval/datasets.py",
        "    if lon_fits and not lat_fits:\n        return True, (",
        "    if lon_fits and not lat_fits:\n        return False, (",
        ("tests/eval/test_eval_datasets.py",),
        "the widely copied IM2GPS3K file with a swapped LAT/LON header is read with latitudes as longitudes",
    ),
    Mutation(
        "batch-resume-skip-set", "agent/batch/local.py",
        "pending = [item for item in item_list if item.id not in done]  # started in this (input) order",
        "pending = list(item_list)",
        ("tests/batch", "tests/cli/test_batch_cmd.py"),
        "--resume runs every image again and appends a second line for each done one",
    ),
    Mutation(
        "gps-gallery-csv-order", "index/gps_gallery.py",
        "return np.stack([lat, lon], axis=1)",
        "return np.stack([lon, lat], axis=1)",
        ("tests/index/test_gps_gallery.py",),
        "GPS-gallery candidates proposed at (lon, lat)",
    ),
    Mutation(
        "gps-scan-bound-ignored", "index/gps_gallery.py",
        "needed = int(np.count_nonzero(sims >= kth - bound))",
        "needed = int(np.count_nonzero(sims >= kth))",
        ("tests/index/test_gps_scan.py",),
        "GPS top-k misses near-ties the approximate scan ranked below its first candidates",
    ),
    Mutation(
        "gps-int8-query-sign", "index/gps_scan.py",
        "sign = 1.0 if rest[np.argmax(np.abs(rest))] >= 0 else -1.0",
        "sign = 1.0",
        ("tests/index/test_gps_scan.py",),
        "the int8 kernel re-quantises a query whose digits never reach +63: an error shared by every row",
    ),
    Mutation(
        "exif-west-longitude", "geosleuth/imageio.py",
        'lon=-lon if lon_ref == "W" else lon',
        "lon=lon",
        ("tests/index/test_imageio.py",),
        "a photo's own EXIF GPS west of Greenwich reported in the eastern hemisphere",
    ),
    Mutation(
        "store-exclusions", "index/store.py",
        "if r >= 0 and int(r) not in excluded[qi]",
        "if r >= 0",
        ("tests/index/test_store.py",),
        "leakage-aware evaluation still retrieves the query's own photo and same-author photos",
    ),
)
# fmt: on


def _check_entry(m: Mutation) -> str | None:
    """Why the entry cannot be applied to the current tree, or None."""
    path = ROOT / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    count = path.read_text(encoding="utf-8").count(m.original)
    if count != 1:
        return f"the original snippet occurs {count} times in {m.file} (needs exactly 1): update the entry"
    if m.original == m.mutated:
        return "the mutated snippet equals the original"
    missing = [t for t in m.tests if not (ROOT / t.split("::")[0]).exists()]
    if missing:
        return f"test path(s) {', '.join(missing)} do not exist: update the entry"
    return None


def _package_dirs(copy: Path) -> dict[str, str]:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    return {name: str(copy / folder) for name, folder in setup["package-dir"].items()}


_SITECUSTOMIZE = '''\
"""Written by scripts/mutation_check.py: import geosleuth from the mutation copy, not the worktree."""
import importlib.abc
import importlib.util
import os
import sys

_PACKAGES = {packages!r}


class _MutationCopyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        folder = _PACKAGES.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
        )


sys.meta_path.insert(0, _MutationCopyFinder())
'''


def _prepare_copy(workdir: Path) -> tuple[Path, dict[str, str]]:
    copy = workdir / "tree"
    shutil.copytree(ROOT, copy, ignore=_COPY_IGNORE, symlinks=True)
    site = workdir / "site"
    site.mkdir()
    packages = _package_dirs(copy)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(packages=packages), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("GEOSLEUTH_REQUIRE_VLLM", None)  # the vLLM tests are deselected, never required here
    return copy, env


def _check_imports_come_from_copy(copy: Path, env: dict[str, str]) -> str | None:
    names = sorted(_package_dirs(copy))
    code = "import importlib\n" + "".join(
        f"print(importlib.import_module({name!r}).__file__)\n" for name in names
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return f"the copy does not import: {proc.stderr.strip()[-500:]}"
    outside = [f for f in proc.stdout.split() if not Path(f).resolve().is_relative_to(copy.resolve())]
    return f"modules imported from outside the copy: {outside}" if outside else None


@dataclass
class Outcome:
    status: str  # caught | survived | error
    seconds: float
    detail: str


def _run_tests(copy: Path, env: dict[str, str], tests: tuple[str, ...]) -> Outcome:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not vllm", *tests]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=PER_MUTATION_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return Outcome("caught", time.perf_counter() - started, f"tests timed out after {PER_MUTATION_TIMEOUT_S} s")
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if proc.returncode == 0:
        return Outcome("survived", seconds, last)
    if proc.returncode == 1:
        return Outcome("caught", seconds, ", ".join(failed[:3]) or last)
    if proc.returncode == 2:  # interrupted or collection error: the mutant did not even import
        return Outcome("caught", seconds, f"collection error: {', '.join(failed[:3]) or last}")
    if proc.returncode == 5:
        return Outcome("error", seconds, "no tests ran: update the entry's tests")
    return Outcome("error", seconds, f"pytest exit code {proc.returncode}: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="ID", help="run only this entry (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args(argv)

    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:28} {m.file:22} {m.why}")
        return 0
    known = {m.id for m in MUTATIONS}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(f"unknown mutation id(s) {', '.join(unknown)}; --list shows them")
    selected = [m for m in MUTATIONS if not args.only or m.id in args.only]

    stale = {m.id: problem for m in selected if (problem := _check_entry(m)) is not None}
    for mid, problem in stale.items():
        print(f"STALE    {mid}: {problem}")
    runnable = [m for m in selected if m.id not in stale]
    if not runnable:
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="geosleuth-mutation-"))
    try:
        copy, env = _prepare_copy(workdir)
        problem = _check_imports_come_from_copy(copy, env)
        if problem is not None:
            print(f"cannot run: {problem}")
            return 2
        all_tests = tuple(dict.fromkeys(t for m in runnable for t in m.tests))
        print(f"baseline: {' '.join(all_tests)}", flush=True)
        baseline = _run_tests(copy, env, all_tests)
        if baseline.status != "survived":  # "survived" here means: every test passed
            print(f"cannot run: the tests fail without any mutation ({baseline.detail}); fix them first")
            return 2
        print(f"baseline passed in {baseline.seconds:.0f} s\n", flush=True)

        results: list[tuple[Mutation, Outcome]] = []
        for m in runnable:
            target = copy / m.file
            original_text = target.read_text(encoding="utf-8")
            try:
                target.write_text(original_text.replace(m.original, m.mutated, 1), encoding="utf-8")
                outcome = _run_tests(copy, env, m.tests)
            finally:
                target.write_text(original_text, encoding="utf-8")
            results.append((m, outcome))
            print(f"{outcome.status.upper():8} {m.id:28} {outcome.seconds:5.0f} s  {outcome.detail}", flush=True)
    finally:
        if args.keep:
            print(f"copy kept at {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    counts = {s: sum(1 for _, o in results if o.status == s) for s in ("caught", "survived", "error")}
    print(
        f"\n{counts['caught']} caught, {counts['survived']} survived, {counts['error']} errors, "
        f"{len(stale)} stale, of {len(selected)} mutations"
    )
    for m, outcome in results:
        if outcome.status == "survived":
            print(f"  survived {m.id} ({m.file}): {m.why}; tests run: {' '.join(m.tests)}")
    if counts["survived"]:
        return 1
    return 2 if counts["error"] or stale else 0


if __name__ == "__main__":
    sys.exit(main())
