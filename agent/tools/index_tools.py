"""Tools that search the indexes: ``search_gallery`` (nearest gallery photos) and ``geoclip_candidates``
(GeoCLIP's GPS-gallery points), each optionally inside an area. The searches are the retrieve stage's
own (:func:`~geosleuth.agent.retrieve.gallery_neighbors`, :func:`~geosleuth.agent.retrieve.gps_candidates`);
the run's user constraints always apply as well.

Candidate keys (``source:source_ref``) name the evidence item at the same location, so that the fusion
never counts a candidate as support for itself: a gallery photo by its id (as the pipeline's), a GPS point
the pipeline also retrieved by the pipeline's ``gps-<i>``, any other GPS point by its coordinate.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.agent.retrieve import gallery_neighbors, gps_candidates
from geosleuth.agent.tools.arguments import Area
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolError, ToolObservation
from geosleuth.agent.verify import candidate_pool
from geosleuth.constraints import Constraint
from geosleuth.types import Candidate, CandidateSource, GPSCandidate, Place, RetrievalResult

MAX_K = 50
MAX_SHOWN = 10


class SearchArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    area: Area | None = Field(None, description="only results inside this area; null searches the whole Earth")
    k: int = Field(10, ge=1, le=MAX_K, description="how many results")


def _constraints(args: SearchArguments, context: ToolContext) -> tuple[tuple[Constraint, ...], str]:
    """The user's constraints plus the asked area, and how to say where was searched."""
    extra = (args.area.constraint(context.resources.geocoder),) if args.area is not None else ()
    every = (*context.constraints, *extra)
    return every, (" " + " and ".join(c.label for c in every)) if every else " on the whole Earth"


class SearchGalleryTool(Tool):
    name = "search_gallery"
    description = (
        "The gallery photos that look most like this one (optionally inside an area), with where each was "
        "taken and its similarity; each becomes a candidate."
    )
    arguments = SearchArguments

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, SearchArguments)
        res = context.resources
        if res.store is None:
            raise ToolError("search_gallery is unavailable: no image gallery is configured (set index.gallery)")
        constraints, where = _constraints(args, context)
        authors = (*res.config.retrieval.exclude_authors, *context.exclude_authors)
        found = gallery_neighbors(res.store, context.embeddings.retrieval[0], args.k, context.exclude_ids, authors,
                                  constraints, res.geocoder)
        data = {"area": args.area.model_dump() if args.area else None, "k": args.k,
                "neighbors": [n.model_dump(mode="json") for n in found]}
        if not found:
            return ToolObservation(text=f"No gallery photo{where}.", data=data)
        rows = [f"{i + 1}. ({n.lat:.4f}, {n.lon:.4f}) {n.place.hierarchy() if n.place else 'unknown place'}, "
                f"similarity {n.similarity:.3f}" for i, n in enumerate(found[:MAX_SHOWN])]
        candidates = tuple(candidate_pool(RetrievalResult(neighbors=found), []))
        return ToolObservation(
            text=f"{len(found)} most similar gallery photo(s){where} (cosine similarity, 1 = identical):\n"
            + "\n".join(rows), data=data, candidates=candidates,
        )


class GeoclipCandidatesTool(Tool):
    name = "geoclip_candidates"
    description = (
        "GeoCLIP's likeliest locations for this photo (optionally inside an area), with similarity and, "
        "over the whole Earth, probability; each becomes a candidate."
    )
    arguments = SearchArguments

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, SearchArguments)
        res = context.resources
        if res.gps_gallery is None:
            raise ToolError("geoclip_candidates is unavailable: no GPS gallery is configured (set index.gps_gallery)")
        if context.embeddings.geoclip is None:
            raise ToolError("geoclip_candidates is unavailable: the image encoder has no GeoCLIP head "
                            "(use encoders.image_encoder = 'clip+geoclip')")
        constraints, where = _constraints(args, context)
        found = gps_candidates(res.gps_gallery, context.embeddings.geoclip[0], args.k, constraints, res.geocoder)
        data = {"area": args.area.model_dump() if args.area else None, "k": args.k,
                "candidates": [g.model_dump(mode="json") for g in found]}
        if not found:
            return ToolObservation(text=f"No GPS-gallery point{where}.", data=data)
        places = res.geocoder.lookup_many([(g.lat, g.lon) for g in found])
        rows = [f"{i + 1}. ({g.lat:.4f}, {g.lon:.4f}) {p.hierarchy()}, similarity {g.similarity:.3f}"
                + (f", probability {g.probability:.3f}" if g.probability is not None else "")
                for i, (g, p) in enumerate(zip(found[:MAX_SHOWN], places, strict=False))]
        candidates = tuple(_gps_candidate(g, context.retrieval.gps_candidates, place)
                           for g, place in zip(found, places, strict=True))
        return ToolObservation(text=f"GeoCLIP's {len(found)} likeliest point(s){where}:\n" + "\n".join(rows),
                               data=data, candidates=candidates)


def _gps_candidate(point: GPSCandidate, retrieved: list[GPSCandidate], place: Place) -> Candidate:
    ref = next((f"gps-{i}" for i, g in enumerate(retrieved) if (g.lat, g.lon) == (point.lat, point.lon)),
               f"gps@{point.lat:.5f},{point.lon:.5f}")
    return Candidate(lat=point.lat, lon=point.lon, source=CandidateSource.GPS_GALLERY, source_ref=ref,
                     place=place)
