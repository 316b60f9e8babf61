"""How tool candidates reach the fusion: ``verify(..., extra_candidates=observation.candidates)`` judges
them with every other candidate, without counting them as evidence."""

from __future__ import annotations

import dataclasses

from geosleuth.agent.fusion import candidate_key
from geosleuth.agent.tools.catalog import default_tools
from geosleuth.agent.verify import verify
from geosleuth.constraints import Constraint
from geosleuth.testing.synthetic import synthetic_photo


def _verify(context, extra=(), constraints=()):
    res = context.resources
    return verify(context.retrieval, [], geoclip_embedding=context.embeddings.geoclip[0],
                  location_encoder=res.location_encoder, geocoder=res.geocoder, config=res.config.verify,
                  constraints=constraints, calibration=res.calibration, extra_candidates=list(extra))


def test_tool_candidates_are_judged_but_are_not_evidence(make_context) -> None:
    context = make_context(synthetic_photo("JP", seed=999, size=64))
    lisbon = default_tools(context.resources).call("lookup_place", {"name": "Lisboa"}, context).candidates
    before = _verify(context)
    after = _verify(context, lisbon)
    keys = {candidate_key(c) for c in after.ranked}
    assert "vlm:lookup_place:geonames-2267057" in keys
    judged = next(c for c in after.ranked if candidate_key(c) == "vlm:lookup_place:geonames-2267057")
    assert judged.place is not None and judged.place.country_code == "PT" and judged.scores
    # Not evidence: every pipeline candidate scores exactly as before.
    old = {candidate_key(c): c.score for c in before.ranked}
    assert {k: c.score for c in after.ranked if (k := candidate_key(c)) in old} == old


def test_a_tool_candidate_the_pipeline_already_has_is_not_added_twice(make_context) -> None:
    context = make_context(synthetic_photo("JP", seed=999, size=64))
    again = default_tools(context.resources).call("search_gallery", {"k": 5}, context).candidates
    keys = [candidate_key(c) for c in _verify(context, again).ranked]
    assert len(keys) == len(set(keys)) == len(_verify(context).ranked)


def test_tool_candidates_outside_the_users_constraint_are_rejected(make_context) -> None:
    context = make_context(synthetic_photo("JP", seed=999, size=64))
    in_japan = dataclasses.replace(context, constraints=(Constraint.in_country("JP", "Japan"),))
    lisbon = default_tools(context.resources).call("lookup_place", {"name": "Lisboa"}, in_japan).candidates
    result = _verify(context, lisbon, constraints=in_japan.constraints)
    assert "vlm:lookup_place:geonames-2267057" in {candidate_key(c) for c in result.rejected}
    assert "vlm:lookup_place:geonames-2267057" not in {candidate_key(c) for c in result.ranked}
