"""`eval.run`: a benchmark through a preset of the real pipeline (tiny local models), scored and reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from geosleuth.agent.trace.io import trace_file_name
from geosleuth.config import Config
from geosleuth.errors import DataFileError
from geosleuth.eval.run import run_evaluation
from geosleuth.eval.run_folder import MISSING_IMAGES_FILE, PREDICTIONS_FILE, TRACES_DIR

MISSING_ID = "images/XX/not_there.jpg"
CORRUPT_ID = "images/XX/corrupt.jpg"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _truth_with_a_missing_image(benchmark: dict[str, Path], tmp_path: Path) -> Path:
    """The benchmark's metadata plus one row whose image is not on disk."""
    truth = tmp_path / "im2gps3k_places365.csv"
    text = benchmark["truth"].read_text(encoding="utf-8").rstrip("\n")
    truth.write_text(f"{text}\n{MISSING_ID},ghost,10.0,20.0,,,,,,,,\n", encoding="utf-8")
    return truth


def _trace(out: Path, image_id: str) -> dict[str, Any]:
    return json.loads((out / TRACES_DIR / trace_file_name(image_id)).read_text(encoding="utf-8"))


def _retrieved(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return next(e for e in trace["events"] if e["step"] == "retrieve")["outputs"]["neighbors"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, run_benchmark: dict[str, Path], run_config: Config) -> Any:
    """The default preset, with the tiny LLaVA, over the 7-image benchmark plus one image that is not
    on disk and one file that is not a picture. The random LLaVA never gives a usable answer, so every
    answer is degraded (no VLM): reported only with allow_degraded, and titled so."""
    tmp = tmp_path_factory.mktemp("full_run")
    shutil.copytree(run_benchmark["images"] / "images", tmp / "images")
    (tmp / CORRUPT_ID).parent.mkdir(parents=True, exist_ok=True)
    (tmp / CORRUPT_ID).write_bytes(b"\xff\xd8 this is not a JPEG" * 10)
    truth = _truth_with_a_missing_image(run_benchmark, tmp)
    with truth.open("a", encoding="utf-8") as handle:
        handle.write(f"{CORRUPT_ID},ghost,-10.0,-20.0,,,,,,,,\n")
    with pytest.warns(UserWarning, match="missing or unreadable"):
        return run_evaluation(
            "im2gps3k", truth, tmp, tmp / "run", config=run_config, resamples=200, allow_degraded=True
        )


def test_full_run_writes_every_artefact(full_run: Any, run_benchmark: dict[str, Path]) -> None:
    out = full_run.out_dir
    truth_ids = [line.split(",")[0] for line in run_benchmark["truth"].read_text().splitlines()[1:]]
    truth_ids += [MISSING_ID, CORRUPT_ID]
    lines = _lines(out / PREDICTIONS_FILE)
    assert sorted(line["id"] for line in lines) == sorted(truth_ids), "one line per benchmark image"

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"n", "failures", "acc_km", "median_km", "geoscore", "country", "distance", "bootstrap"} <= set(metrics)
    assert set(metrics["acc_km"]) == {"1", "25", "200", "750", "2500"}
    assert metrics["n"] == 9
    report = (out / "report.md").read_text()
    assert "within 2500 km" in report and "## Plots" in report
    for plot in ("error_cdf.png", "world_map.png", "reliability.png"):
        assert (out / plot).stat().st_size > 1000
    assert "## Confidence calibration" in report and "| within_25km |" in report  # ECE per level
    assert (out / "per_image.csv").read_text().count("\n") == 10
    located = [line["prediction"] for line in lines if (line.get("prediction") or {}).get("lat") is not None]
    assert located and all(p["evidence"]["clusters"][0]["sources"] for p in located), "per-source evidence saved"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "im2gps3k" and manifest["preset"] == "full" and manifest["status"] == "complete"
    assert manifest["config_hash"] == Config.model_validate(manifest["config"]).config_hash()
    assert {p["id"] for p in manifest["prompts"]} == {"geo_reasoning", "answer_repair"}
    assert all(p["version"] and len(p["sha256"]) == 64 for p in manifest["prompts"])
    assert manifest["models"]["vlm"] and manifest["models"]["gallery"]
    assert manifest["gallery"]["count"] == 35
    assert manifest["counts"]["images"] == 9 and manifest["counts"]["failures"] == metrics["failures"]
    assert manifest["git_commit"] is None or len(manifest["git_commit"]) == 40
    assert manifest["finished_at"] >= manifest["started_at"]


def test_missing_and_unreadable_images_are_listed_and_scored_as_misses(full_run: Any) -> None:
    out = full_run.out_dir
    assert full_run.missing_images == [MISSING_ID, CORRUPT_ID]
    assert (out / MISSING_IMAGES_FILE).read_text().split() == [MISSING_ID, CORRUPT_ID]
    lines = {line["id"]: line for line in _lines(out / PREDICTIONS_FILE)}
    for image_id in (MISSING_ID, CORRUPT_ID):
        assert "prediction" not in lines[image_id] and Path(image_id).name in lines[image_id]["error"]
    per_image = {row.split(",")[0]: row.split(",") for row in (out / "per_image.csv").read_text().splitlines()}
    assert per_image[MISSING_ID][3] == per_image[CORRUPT_ID][3] == "", "no coordinate, never (0, 0)"
    assert full_run.metrics.failures >= 2 and full_run.metrics.n == 9, "in the denominator"
    report = (out / "report.md").read_text()
    assert MISSING_ID in report and CORRUPT_ID in report
    assert full_run.manifest["counts"]["missing_images"] == 2


def test_a_run_without_its_vlm_is_reported_as_degraded_with_per_step_failure_counts(full_run: Any) -> None:
    out = full_run.out_dir
    assert "# full on im2gps3k (own id excluded) — degraded: 7 images without vlm" in (out / "report.md").read_text()
    stages = json.loads((out / "metrics.json").read_text())["stage_failures"]
    assert stages == full_run.manifest["stage_failures"]
    assert stages["status"] == {"degraded": 7, "error": 2}
    assert stages["missing_stages"] == {"vlm": 7}
    assert stages["failures_by_step"] == {"reason": 7, "perceive": 2}


def test_a_run_whose_vlm_gives_nothing_is_stopped_by_the_circuit_breaker(
    tmp_path: Path, run_benchmark: dict[str, Path], run_config: Config
) -> None:
    from geosleuth.agent.batch import BatchCircuitOpen

    with pytest.raises(BatchCircuitOpen, match="--resume"):
        run_evaluation(
            "im2gps3k", run_benchmark["truth"], run_benchmark["images"], tmp_path / "run", config=run_config,
            limit=4, concurrency=1, resamples=0,
        )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "missing vlm" in manifest["stopped_because"]
    assert (tmp_path / "run" / PREDICTIONS_FILE).read_text() == "", "no degraded line written"


@pytest.mark.parametrize(("degraded", "allowed", "refused"), [(1, False, False), (2, False, True), (2, True, False)])
def test_more_than_one_percent_degraded_is_refused_unless_allowed(
    tmp_path: Path, degraded: int, allowed: bool, refused: bool
) -> None:
    from geosleuth.errors import DegradedResultsError
    from geosleuth.eval.degraded import check_degraded

    stages = {"status": {}, "failures_by_step": {}, "missing_stages": {"vlm": degraded}}
    if refused:
        with pytest.raises(DegradedResultsError, match="2 images without vlm of 100.*--allow-degraded"):
            check_degraded(stages, 100, tmp_path, allow_degraded=allowed)
    else:
        title = check_degraded(stages, 100, tmp_path, allow_degraded=allowed)
        assert title == f"degraded: {degraded} images without vlm"


def test_resume_after_a_partial_predictions_file_adds_only_the_missing_lines(
    tmp_path: Path, run_benchmark: dict[str, Path], run_config: Config
) -> None:
    truth = _truth_with_a_missing_image(run_benchmark, tmp_path)
    out = tmp_path / "run"
    args = ("im2gps3k", truth, run_benchmark["images"], out)
    with pytest.warns(UserWarning, match="missing or unreadable"):  # the loader checks the whole file
        first = run_evaluation(*args, preset="nearest-neighbor", config=run_config, limit=3, resamples=0)
    assert len(_lines(out / PREDICTIONS_FILE)) == 3 and first.metrics.n == 3
    done = {line["id"] for line in _lines(out / PREDICTIONS_FILE)}
    with (out / PREDICTIONS_FILE).open("a", encoding="utf-8") as handle:  # a run killed mid-write
        handle.write('{"id": "images/KE/KE_0000.jpg", "predic')

    with pytest.warns(UserWarning, match="missing or unreadable"):
        second = run_evaluation(*args, preset="nearest-neighbor", config=run_config, resamples=0)

    ids = [line["id"] for line in _lines(out / PREDICTIONS_FILE)]
    assert len(ids) == len(set(ids)) == 8, "every image once, none twice"
    assert second.summary.previously_done == 3 and second.summary.done_this_run == 5
    assert second.summary.truncated_partial_line
    assert done <= set(ids) and second.metrics.n == 8
    assert second.manifest["counts"]["previously_done"] == 3


def test_a_run_folder_is_not_resumed_with_other_settings(
    tmp_path: Path, run_benchmark: dict[str, Path], run_config: Config
) -> None:
    out = tmp_path / "run"
    args = ("im2gps3k", run_benchmark["truth"], run_benchmark["images"], out)
    run_evaluation(*args, preset="nearest-neighbor", config=run_config, limit=1, resamples=0)
    with pytest.raises(DataFileError, match="preset: 'nearest-neighbor' there, 'neighbor-vote' now"):
        run_evaluation(*args, preset="neighbor-vote", config=run_config, limit=1, resamples=0)
    assert len(_lines(out / PREDICTIONS_FILE)) == 1, "the earlier run is untouched"
    with pytest.raises(DataFileError, match="already holds a run"):
        run_evaluation(*args, preset="nearest-neighbor", config=run_config, limit=1, resume=False)
    again = run_evaluation(*args, preset="neighbor-vote", config=run_config, limit=1, overwrite=True, resamples=0)
    assert again.manifest["preset"] == "neighbor-vote" and len(_lines(out / PREDICTIONS_FILE)) == 1
    assert again.summary.done_this_run == 1 and again.summary.previously_done == 0, "made again, not kept"


@pytest.fixture(scope="module")
def gallery_as_benchmark(tmp_path_factory: pytest.TempPathFactory, run_gallery: dict[str, Path],
                         run_config: Config) -> dict[bool, Any]:
    """Nearest-neighbour runs over the first 10 gallery photos themselves (every query is in the
    gallery: the leakage case), with and without same-author exclusion, traces kept."""
    runs = {}
    for exclude in (False, True):
        out = tmp_path_factory.mktemp(f"in_gallery_exclude_{exclude}")
        runs[exclude] = run_evaluation(
            "im2gps3k", run_gallery["table"], run_gallery["images"], out, preset="nearest-neighbor",
            config=run_config, limit=10, exclude_same_author=exclude, save_traces=True, resamples=0,
        )
    return runs


def test_exclude_same_author_removes_the_photographers_gallery_items(
    gallery_as_benchmark: dict[bool, Any], run_gallery: dict[str, Path]
) -> None:
    from geosleuth.eval.datasets import load_im2gps3k

    truths = load_im2gps3k(run_gallery["table"], run_gallery["images"]).records[:10]

    def neighbours(run: Any) -> dict[str, list[dict[str, Any]]]:
        return {t.id: _retrieved(_trace(run.out_dir, t.id)) for t in truths}

    author = {t.id: t.author for t in truths}
    plain, excluded = neighbours(gallery_as_benchmark[False]), neighbours(gallery_as_benchmark[True])
    for runs in (plain, excluded):
        assert all(len(found) == 5 for found in runs.values())
        assert all(image_id not in {n["id"] for n in found} for image_id, found in runs.items()), "never itself"
    same_author = [i for i, found in plain.items() if any(n["metadata"]["author"] == author[i] for n in found)]
    assert same_author, "without the option the photographer's other pictures are retrieved"
    assert all(n["metadata"]["author"] != author[i] for i, found in excluded.items() for n in found)
    assert gallery_as_benchmark[True].manifest["exclude_same_author"] is True
    assert "same-author" in (gallery_as_benchmark[True].out_dir / "report.md").read_text()


def test_nearest_neighbor_preset_answers_the_top_gallery_neighbours_coordinate(
    gallery_as_benchmark: dict[bool, Any], run_gallery: dict[str, Path], run_image_encoder: Any, run_config: Config
) -> None:
    from geosleuth.agent.perceive import perceive
    from geosleuth.eval.datasets import load_im2gps3k
    from geosleuth.index.store import GalleryStore

    run = gallery_as_benchmark[True]
    predictions = {line["id"]: line["prediction"] for line in _lines(run.predictions_path)}
    truths = load_im2gps3k(run_gallery["table"], run_gallery["images"]).records[:10]
    with GalleryStore.open(run_gallery["store"]) as store:
        for truth in truths:
            query = perceive(truth.image_path, run_image_encoder, max_pixels=run_config.vlm.max_image_pixels)
            (top,) = store.search(query.embeddings.retrieval[0], 1, exclude_ids=[truth.id],
                                  exclude_authors=[truth.author])
            prediction = predictions[truth.id]
            assert (prediction["lat"], prediction["lon"]) == (top.lat, top.lon), truth.id
            assert prediction["sources_used"] == ["gallery"]


def test_cli_runs_a_benchmark_and_lists_presets(
    tmp_path: Path, run_benchmark: dict[str, Path], run_config: Config
) -> None:
    from geosleuth.cli import app

    config_file = tmp_path / "geosleuth.toml"
    config_file.write_text(run_config.to_toml(), encoding="utf-8")
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "--config", str(config_file), "--set", "verify.support_radius_km=0.01",
        "eval", "run", "im2gps3k", "--truth", str(run_benchmark["images"]), "--images", str(run_benchmark["images"]),
        "--out", str(out), "--preset", "nearest-neighbor", "--limit", "2", "--resamples", "50",
    ])
    assert result.exit_code == 0, result.output
    assert "within 2500 km" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"] == "nearest-neighbor" and manifest["limit"] == 2
    assert manifest["truth_file"] == str(run_benchmark["truth"].resolve()), "found in the folder"
    assert manifest["config"]["vlm"]["backend"] == "none", "the preset applies"
    assert manifest["config"]["verify"]["support_radius_km"] == 0.01, "the user's --set wins over the preset"
    assert manifest["user_overrides"] == ["verify.support_radius_km=0.01"]
    assert len(_lines(out / PREDICTIONS_FILE)) == 2

    listed = runner.invoke(app, ["--config", str(config_file), "eval", "presets", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert {"geoclip-top1", "nearest-neighbor", "neighbor-vote", "vlm-zero-shot", "full", "no-retrieval",
            "no-diversification", "no-verification"} <= set(rows)
    # {placeholders} resolved against this configuration: 2 variants x 1 sample, largest count 5
    assert "vlm.samples_per_variant=2" in rows["vlm-zero-shot"]["resolved"]
    assert "prompts.neighbor_counts=[5]" in rows["no-diversification"]["resolved"]

    bad = runner.invoke(app, ["eval", "run", "im2gps3k", "--truth", str(run_benchmark["truth"]), "--images",
                              str(run_benchmark["images"]), "--out", str(tmp_path / "x"), "--preset", "nope"])
    assert bad.exit_code == 2 and "unknown evaluation preset 'nope'" in " ".join(bad.output.split())


def test_a_tools_preset_on_a_server_without_tool_calls_says_its_numbers_are_the_pipelines(
    run_benchmark: dict[str, Path], run_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preflight's tool probe is refused (as vLLM without --enable-auto-tool-choice refuses it): the
    run uses the fixed pipeline, and the manifest, the report and a warning say so."""
    from geosleuth.agent.toolloop import fallback
    from geosleuth.eval.report import ReportWarning

    refusal = 'HTTP 400: "auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'

    async def refused(backend: object) -> str:
        return refusal

    monkeypatch.setattr(fallback, "probe_tool_support", refused)
    with pytest.warns(ReportWarning, match="fell back to the fixed pipeline"):
        result = run_evaluation(
            "im2gps3k", run_benchmark["truth"], run_benchmark["images"], tmp_path / "run", preset="tools-agent",
            config=run_config, limit=2, resamples=50, allow_degraded=True,
        )
    assert result.manifest["tools_fallback"] == refusal
    assert result.manifest["config"]["agent"]["mode"] == "tools"
    assert any("fell back to the fixed pipeline" in note for note in result.notes)
    assert "fell back to the fixed pipeline" in result.report.report_md.read_text(encoding="utf-8")
    lines = _lines(result.predictions_path)
    assert len(lines) == 2 and all("fell back to the fixed pipeline" in json.dumps(line) for line in lines)
