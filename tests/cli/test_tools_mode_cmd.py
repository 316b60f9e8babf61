"""`agent.mode = tools` through the real CLI entry point with the in-process tiny model: every
model turn is an action held to the action schema by constrained decoding (so each call reaches
its tool with valid arguments), the loop ends at submit or its budget, and the trace and
`config show` say which mode ran."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.types import Prediction, Trace

runner = CliRunner()

TOOLS_MODE = ["--set", "agent.mode=tools", "--set", "agent.max_tool_calls=2", "--set", "vlm.max_new_tokens=1200"]


def _tool_schemas() -> dict[str, dict]:
    """Each shipped tool's argument schema, by name (what the model was shown)."""
    from geosleuth.agent.tools import geo_tools, index_tools, submit, vision_tools
    from geosleuth.agent.tools.registry import Tool

    schemas = {}
    for module in (geo_tools, index_tools, submit, vision_tools):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Tool) and value is not Tool:
                tool = value.__new__(value)  # the schema needs no resources (lookup_place's gazetteer)
                schemas[value.name] = tool.parameters_schema()
    return schemas


def test_config_show_names_the_agent_mode(tiny_config: Path) -> None:
    default = runner.invoke(app, ["--config", str(tiny_config), "config", "show"])
    assert default.exit_code == 0 and 'mode = "pipeline"' in default.stdout
    tools = runner.invoke(app, ["--config", str(tiny_config), "--set", "agent.mode=tools", "config", "show"])
    assert tools.exit_code == 0 and 'mode = "tools"' in tools.stdout and "max_tool_calls = 8" in tools.stdout


def test_tools_mode_runs_schema_valid_actions_with_the_in_process_model(
    tiny_config: Path, folder: Path, tmp_path: Path
) -> None:
    trace_path = tmp_path / "trace.json"
    args = ["--config", str(tiny_config), *TOOLS_MODE, "locate", "--json", "--allow-degraded",
            "--trace", str(trace_path), str(folder / "porto.jpg")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    prediction = Prediction.model_validate(json.loads(result.stdout))
    trace = Trace.model_validate_json(trace_path.read_text())
    reason = next(e for e in trace.events if e.step == "reason")
    assert reason.inputs["agent_mode"] == "tools" and trace.prompts[0].template_id == "geo_tools"
    turns = [e for e in trace.events if e.step == "tool-loop:model"]
    calls = [e for e in trace.events if e.step.startswith("tool:")]
    assert 1 <= len(turns) <= 2 and len(calls) == len(turns)
    for turn in turns:  # the grammar held: one complete action, a known tool, arguments an object
        assert turn.error is None and turn.outputs["finish_reason"] == "stop", turn.outputs
        [action] = turn.outputs["tool_calls"]
        assert action["name"] in reason.inputs["tools"] and isinstance(action["arguments"], dict)
    schemas = _tool_schemas()
    for call in calls:  # arguments valid for the tool's schema (the tool may still refuse, e.g. an empty box)
        assert call.step != "tool:invalid", call.error
        jsonschema.validate(call.inputs["arguments"], schemas[call.step.removeprefix("tool:")])
    # the last call the budget allows is submit
    assert turns[-1].inputs["tool_choice"] == "submit" or calls[-1].step == "tool:submit"
    loop = reason.outputs["loop"]
    if loop["submitted"]:
        assert prediction.missing_stages == [] and (reason.outputs["hypotheses"] or reason.outputs["abstentions"])
    else:  # never passed off as the VLM's answer
        assert prediction.status.value == "degraded" and prediction.missing_stages == ["vlm"]


def test_locate_and_batch_warn_once_when_tools_mode_fell_back(fake_geo, folder: Path, tmp_path: Path) -> None:
    fake_geo.tools_fallback = "HTTP 400: tool_choice requires --tool-call-parser"
    located = runner.invoke(app, ["locate", str(folder / "porto.jpg")])
    assert located.exit_code == 0, located.output
    assert located.stderr.count("warning: agent.mode=tools fell back to the fixed pipeline") == 1
    assert "--tool-call-parser" in located.stderr
    batch = runner.invoke(app, ["batch", str(folder / "sub"), "--out", str(tmp_path / "r.jsonl")])
    assert batch.stderr.count("fell back to the fixed pipeline") == 1, batch.output
