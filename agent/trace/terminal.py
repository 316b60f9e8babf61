"""The terminal view of a trace: a rich Tree of steps, clues, hypotheses, retrieval, candidates with
their component scores, and the decision. Model text is never parsed as rich markup."""

from __future__ import annotations

from typing import Any

from geosleuth.agent.trace.digest import (
    cluster_rows,
    digest,
    fmt_coord,
    hypothesis_place,
    osm_link,
    score_names,
    tool_call_rows,
)
from geosleuth.geo import geodesic_km
from geosleuth.types import Trace

# How many retrieved items the view lists (the HTML page's map shows all of them).
MAX_LISTED_NEIGHBORS = 10
MAX_LISTED_GPS = 10
MAX_LISTED_PROBLEMS = 10


def trace_tree(trace: Trace) -> Any:
    """A ``rich.tree.Tree`` of the trace: steps, clues, hypotheses, candidates (scores), decision."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    d = digest(trace)
    title = Text.assemble(("trace ", "bold"), (trace.trace_id, "cyan"), "  ", (trace.image.path, "bold"))
    root = Tree(title)
    if d.problems:
        problems = root.add(Text(f"parts of this trace could not be read and are not shown ({len(d.problems)})",
                                 style="bold red"))
        for problem in d.problems[:MAX_LISTED_PROBLEMS]:
            problems.add(Text(problem))
        if len(d.problems) > MAX_LISTED_PROBLEMS:
            problems.add(Text(f"... and {len(d.problems) - MAX_LISTED_PROBLEMS} more", style="red"))

    steps = root.add(Text("steps", style="bold"))
    for event in trace.events:
        line = Text.assemble((f"{event.step}", "bold"), f"  {event.duration_s:.2f} s")
        if event.error:
            line.append("  failed: ", style="red")
            line.append(event.error)
        steps.add(line)
    if trace.models:
        steps.add(Text("models: " + ", ".join(f"{k}={v}" for k, v in trace.models.items()), style="dim"))
    steps.add(Text(f"config {trace.config_hash}", style="dim"))

    calls = tool_call_rows(trace)
    if calls:
        tools = root.add(Text(f"tool calls ({len(calls)})", style="bold"))
        for name, arguments, result, seconds in calls:
            node = tools.add(Text.assemble((name, "magenta"), f"({arguments})  {seconds} s"))
            node.add(Text(result, style="red" if result.startswith("error: ") else ""))

    clues = root.add(Text(f"clues ({len(d.clues)})", style="bold"))
    for clue in d.clues:
        clues.add(Text.assemble(clue.observation, (" -> ", "dim"), (clue.implication, "italic")))

    hyps = root.add(Text(f"hypotheses ({len(d.hypotheses)})", style="bold"))
    for h in d.hypotheses:
        node = hyps.add(
            Text.assemble(
                (f"{h.variant}#{h.sample_index}", "magenta"), "  ", hypothesis_place(h), "  ",
                (fmt_coord(h.lat, h.lon), "cyan"), f"  confidence {h.confidence:.2f}",
            )
        )
        for clue in h.clues:
            node.add(Text.assemble(clue.observation, (" -> ", "dim"), clue.implication))
    if d.reasoning_failures:
        fails = root.add(Text(f"unusable VLM replies ({len(d.reasoning_failures)})", style="bold red"))
        for failure in d.reasoning_failures:
            node = fails.add(Text.assemble((f"{failure.variant}#{failure.sample_index}", "magenta"), "  ",
                                           failure.error))
            if failure.raw_text:
                node.add(Text(failure.raw_text[:300] + ("..." if len(failure.raw_text) > 300 else ""), style="dim"))

    if d.neighbors or d.gps_candidates:
        retrieval = root.add(Text("retrieval", style="bold"))
        if d.neighbors:
            node = retrieval.add(Text(f"gallery neighbours ({len(d.neighbors)})"))
            for n in d.neighbors[:MAX_LISTED_NEIGHBORS]:
                place = n.place.hierarchy() if n.place else ""
                node.add(Text(f"{n.id}  {fmt_coord(n.lat, n.lon)}  similarity {n.similarity:.3f}  {place}"))
        if d.gps_candidates:
            node = retrieval.add(Text(f"GPS-gallery candidates ({len(d.gps_candidates)})"))
            for g in d.gps_candidates[:MAX_LISTED_GPS]:
                node.add(Text(f"{fmt_coord(g.lat, g.lon)}  similarity {g.similarity:.3f}"))

    names = score_names(d.candidates)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("#", "coordinate", "place", "source", *names, "score", "conf."):
        table.add_column(column, justify="right" if column in (*names, "score", "conf.") else "left")
    for rank, c in enumerate(d.candidates, start=1):
        table.add_row(
            str(rank), fmt_coord(c.lat, c.lon), Text(c.place.hierarchy() if c.place else ""),
            Text(c.source.value + (f" ({c.source_ref})" if c.source_ref else "")),
            *(f"{c.scores[n]:.3f}" if n in c.scores else "-" for n in names),
            f"{c.score:.3f}", f"{c.confidence:.2f}",
        )
    cands = root.add(Text(f"candidates ({len(d.candidates)}), ranked", style="bold"))
    if d.candidates:
        cands.add(table)

    decision = root.add(Text("decision", style="bold green"))
    p = d.prediction
    if p is None:
        decision.add(Text("the trace has no prediction (the run stopped early)", style="red"))
    elif p.ok:
        assert p.lat is not None and p.lon is not None
        decision.add(Text.assemble((fmt_coord(p.lat, p.lon), "bold cyan"), "  ",
                                   p.place.hierarchy() if p.place else "",
                                   f"  confidence {p.confidence:.2f}" if p.confidence is not None else ""))
        decision.add(Text(osm_link(p.lat, p.lon), style="dim"))
        if p.degraded:
            missing = ", ".join(p.missing_stages)
            decision.add(Text.assemble(("status degraded: ", "bold yellow"), f"answered without {missing}"))
    else:
        decision.add(Text.assemble(("no coordinate: ", "bold red"), p.failure_reason or ""))
    if p is not None:
        for failure in p.failures:
            decision.add(Text.assemble((f"{failure.step} failed: ", "red"), failure.error))
        if p.levels is not None:
            decision.add(Text(p.levels.summary(), style="dim"))
        if p.text is not None:
            decision.add(Text.assemble(("text in the photo: ", "bold"), p.text.summary()))
    if p is not None and p.evidence is not None and p.evidence.clusters:
        headers, rows = cluster_rows(p.evidence)
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in headers:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        root.add(Text(f"clusters ({len(p.evidence.clusters)}), heaviest first: evidence per source", style="bold")
                 ).add(table)
    if d.exif_gps is not None:
        line = Text.assemble(("EXIF GPS ", "bold"), fmt_coord(d.exif_gps.lat, d.exif_gps.lon))
        if p is not None and p.ok:
            km = float(geodesic_km(p.lat, p.lon, d.exif_gps.lat, d.exif_gps.lon))
            line.append(f"  ({km:,.1f} km from the prediction)")
        decision.add(line)
    return root
