"""Tools about places on Earth: ``reverse_geocode`` (what is at a point), ``lookup_place`` (where a
named place is) and ``score_location`` (how well a point agrees with the evidence gathered so far)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.agent.fusion import candidate_key
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolError, ToolObservation
from geosleuth.agent.verify import verify, weights_of
from geosleuth.types import Candidate, CandidateSource

if TYPE_CHECKING:
    from geosleuth.agent.tools.gazetteer import Gazetteer

MAX_PLACES_SHOWN = 5
# The probe candidate score_location adds to the pool (no evidence item carries this key).
PROBE_REF = "score_location:probe"


class PointArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90.0, le=90.0, allow_inf_nan=False, description="latitude, degrees")
    lon: float = Field(ge=-180.0, le=180.0, allow_inf_nan=False, description="longitude, degrees")


class ReverseGeocodeTool(Tool):
    name = "reverse_geocode"
    description = "What is at a coordinate: continent, country, region, nearest town (or at sea, off which coast)."
    arguments = PointArguments

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, PointArguments)
        place = context.resources.geocoder.lookup(args.lat, args.lon)
        where = place.hierarchy()
        if place.city and place.city_distance_km is not None and not place.at_sea:
            where += f" (nearest town {place.city}, {place.city_distance_km:.1f} km away)"
        text = f"({args.lat:.4f}, {args.lon:.4f}) is {where}."
        return ToolObservation(text=text, data={"lat": args.lat, "lon": args.lon,
                                                "place": place.model_dump(mode="json")})


class LookupPlaceArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80, description="a place name, in any language or spelling")


class LookupPlaceTool(Tool):
    name = "lookup_place"
    description = (
        "Find where a named place is (GeoNames towns and cities, alternate and local names, tolerant of "
        "misspellings): matching places with country, population and coordinates, each a candidate."
    )
    arguments = LookupPlaceArguments

    def __init__(self, gazetteer: Gazetteer) -> None:
        self.gazetteer = gazetteer

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, LookupPlaceArguments)
        matches = self.gazetteer.lookup(args.name.strip())
        data = {"name": args.name, "matches": [m.model_dump(mode="json") for m in matches]}
        if not matches:
            return ToolObservation(
                text=f"No place called {args.name!r} is known (towns of at least "
                f"{self.gazetteer.min_population:,} people); no candidate.", data=data,
            )
        # Source "vlm": the model chose the name; the place is a candidate the fusion judges, not evidence.
        candidates = tuple(Candidate(lat=m.lat, lon=m.lon, source=CandidateSource.VLM,
                                     source_ref=f"{self.name}:geonames-{m.geonameid}") for m in matches)
        rows = [f"{m.name} ({m.country_code}, {m.lat:.4f}, {m.lon:.4f}, pop. {m.population:,}, "
                f"{m.weight:.0%} of the places with this name by population"
                + (f", fuzzy match {m.similarity:.2f} to '{m.matched_name}'" if m.similarity < 1.0 else "") + ")"
                for m in matches[:MAX_PLACES_SHOWN]]
        return ToolObservation(text=f"{args.name!r}: " + "; ".join(rows) + ". Each is now a candidate.",
                               data=data, candidates=candidates)


class ScoreLocationTool(Tool):
    name = "score_location"
    description = (
        "How well a coordinate agrees with the evidence gathered so far (gallery neighbours, GeoCLIP, text, "
        "answers), compared with the best candidate."
    )
    arguments = PointArguments

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, PointArguments)
        res = context.resources
        probe = Candidate(lat=args.lat, lon=args.lon, source=CandidateSource.VLM, source_ref=PROBE_REF)
        geoclip = context.embeddings.geoclip[0] if context.embeddings.geoclip is not None else None
        # Every source may propose the answer here: the probe is judged whatever verify.candidate_sources says.
        config = res.config.verify.model_copy(update={"candidate_sources": [s.value for s in CandidateSource]})
        result = verify(
            context.retrieval, list(context.hypotheses), geoclip_embedding=geoclip,
            location_encoder=res.location_encoder, geocoder=res.geocoder, config=config,
            constraints=context.constraints, calibration=res.calibration, text=context.text,
            extra_candidates=[*context.candidates, probe],
        )
        point = f"({args.lat:.4f}, {args.lon:.4f})"
        if not any(status == "on" for status in result.components.values()):
            raise ToolError("score_location has nothing to score against: this run has no gallery, GeoCLIP, text "
                            "or answer evidence")
        if any(candidate_key(c) == candidate_key(probe) for c in result.rejected):
            return ToolObservation(
                text=f"{point} lies outside the user's constraint ({'; '.join(c.label for c in context.constraints)})"
                ": the fusion gives it no weight.", data={"lat": args.lat, "lon": args.lon, "inside": False},
            )
        assert result.evidence is not None  # the pool holds the probe
        scored = next(c for c in result.ranked if candidate_key(c) == candidate_key(probe))
        others = [c for c in result.ranked if candidate_key(c) != candidate_key(probe)]
        cluster = result.evidence.clusters[scored.cluster] if scored.cluster is not None else None
        floors = result.evidence.floors
        weights = weights_of(config, res.calibration)
        per_source = ", ".join(
            f"{s} {v:.2f} x weight {weights[s]:.2f}"
            + (" (no evidence nearby)" if s in floors and v <= floors[s] + 1e-6 else "")
            for s, v in scored.scores.items()
        )
        parts = [
            f"Evidence score at {point}: {scored.score:.2f}, the fusion's pooled log-density there: the sum over "
            f"sources of weight x log10(the source's evidence density per km^2 within {config.refine_radius_km:g} "
            f"km); higher means more evidence. Per source: {per_source}."
        ]
        data = {"lat": args.lat, "lon": args.lon, "inside": True, "score": scored.score, "scores": scored.scores,
                "weights": {s: weights[s] for s in scored.scores}, "floors": floors,
                "cluster_posterior": cluster.posterior if cluster is not None else None}
        if others:
            best = max(others, key=lambda c: c.score)
            parts.append(
                f"The best-scoring candidate, ({best.lat:.4f}, {best.lon:.4f}) from {best.source.value}, scores "
                f"{best.score:.2f} (its own evidence item left out): this point is {scored.score - best.score:+.2f} "
                f"orders of magnitude ({10 ** (scored.score - best.score):.3g}x) as dense."
            )
            data |= {"best": {"lat": best.lat, "lon": best.lon, "source": best.source.value, "score": best.score},
                     "log10_ratio_to_best": scored.score - best.score}
        if cluster is not None:
            lead = "the leading place" if scored.cluster == 0 else f"place #{(scored.cluster or 0) + 1} by mass"
            parts.append(
                f"It falls in {lead} of the fusion (within {result.evidence.cluster_radius_km:g} km), whose share "
                f"of the model's probability mass is {cluster.posterior:.3f} (uncalibrated)."
            )
        return ToolObservation(text=" ".join(parts), data=data)
