"""decide on its own: several multi-member clusters, so taking the wrong one moves the answer."""

from __future__ import annotations

from typing import Any

import pytest

from geosleuth.agent.decide import decide
from geosleuth.agent.verify import Verification, verify
from geosleuth.config import VerifyConfig
from geosleuth.geo import haversine_km
from geosleuth.types import (
    Candidate,
    ClusterEvidence,
    FusionEvidence,
    GalleryNeighbor,
    ImageRef,
    LevelConfidence,
    RetrievalResult,
)

# Three places, each a cluster of three candidates; the refined centre is none of its members.
PLACES = {
    "lisbon": ((38.70, -9.14), (38.74, -9.10), (38.72, -9.18)),
    "tokyo": ((35.66, 139.65), (35.70, 139.70), (35.69, 139.60)),
    "lima": ((-12.03, -77.04), (-12.06, -77.00), (-12.05, -77.08)),
}
CENTRES = {"lisbon": (38.7205, -9.1402), "tokyo": (35.6840, 139.6500), "lima": (-12.0467, -77.0400)}


def levels(p: float) -> LevelConfidence:
    return LevelConfidence(country=p, region=p, city=p, within_25km=p, within_200km=p, calibration="test@0")


def verification(masses: dict[str, float]) -> Verification:
    """Clusters listed in the order of ``masses`` (deliberately not heaviest first)."""
    ranked, clusters = [], []
    for name, log_mass in masses.items():
        members = [Candidate(lat=lat, lon=lon, source="gps-gallery", source_ref=f"{name}-{i}", score=-5.0 - i)
                   for i, (lat, lon) in enumerate(PLACES[name])]
        ranked += members
        clusters.append(ClusterEvidence(
            lat=CENTRES[name][0], lon=CENTRES[name][1], area_km2=1963.0,
            members=[f"gps-gallery:{m.source_ref}" for m in members], log_mass=log_mass,
            posterior=0.1, levels=levels(min(0.9, 0.1 * (log_mass + 10))),
        ))
    evidence = FusionEvidence(cluster_radius_km=25.0, allowed_area_km2=5.1e8, clusters=clusters,
                              elsewhere_log_mass=-20.0, elsewhere_posterior=0.1, calibration="test@0")
    return Verification(ranked=ranked, evidence=evidence)


def run(v: Verification, geocoder: Any, top_k: int = 3) -> Any:
    return decide(v, image=ImageRef(path="x.jpg"), hypotheses=[], geocoder=geocoder, config=VerifyConfig(),
                  top_k=top_k, sources_used=["gps-gallery"])


def km(a: Any, b: tuple[float, float]) -> float:
    return float(haversine_km(a.lat, a.lon, b[0], b[1]))


@pytest.mark.parametrize("masses, winner", [
    ({"lisbon": -6.0, "tokyo": -2.0, "lima": -4.0}, "tokyo"),  # heaviest in the middle
    ({"lisbon": -1.0, "tokyo": -5.0, "lima": -3.0}, "lisbon"),  # heaviest first
    ({"lisbon": -5.0, "tokyo": -3.0, "lima": -1.5}, "lima"),  # heaviest last
])
def test_the_answer_is_the_refined_centre_of_the_heaviest_cluster(masses: dict, winner: str, geocoder: Any) -> None:
    prediction = run(verification(masses), geocoder)
    assert (prediction.lat, prediction.lon) == pytest.approx(CENTRES[winner])  # the centre, not a member
    assert all(km(prediction, member) > 1 for member in PLACES[winner])
    order = sorted(masses, key=lambda name: -masses[name])
    assert [next(n for n in PLACES if km(alt, CENTRES[n]) < 10) for alt in prediction.alternatives] == order
    assert prediction.alternatives[0].source_ref == f"{winner}-0"  # the winning cluster's lead
    assert prediction.levels is not None and prediction.confidence == prediction.levels.within_25km
    assert prediction.confidence == pytest.approx(min(0.9, 0.1 * (masses[winner] + 10)))
    assert prediction.place is not None and prediction.evidence is not None


def test_top_k_cuts_the_alternatives_after_the_winner(geocoder: Any) -> None:
    prediction = run(verification({"lisbon": -6.0, "tokyo": -2.0, "lima": -4.0}), geocoder, top_k=1)
    assert len(prediction.alternatives) == 1 and km(prediction.alternatives[0], CENTRES["tokyo"]) < 10


def test_the_fusion_refines_the_centre_within_the_cluster(geocoder: Any) -> None:
    # Three equally similar gallery images a few km apart in Lisbon, one in Tokyo: the answer is their
    # mean position, not one of them.
    lisbon = PLACES["lisbon"]
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id=f"l{i}", lat=c[0], lon=c[1], similarity=0.9) for i, c in enumerate(lisbon)]
        + [GalleryNeighbor(id="t", lat=35.68, lon=139.69, similarity=0.9)],
    )
    checked = verify(retrieval, [], geoclip_embedding=None, location_encoder=None, geocoder=geocoder,
                     config=VerifyConfig())
    prediction = run(checked, geocoder)
    mean = (sum(c[0] for c in lisbon) / 3, sum(c[1] for c in lisbon) / 3)
    assert km(prediction, mean) < 0.5
    assert all(km(prediction, member) > 1.5 for member in lisbon)
    assert checked.evidence is not None and len(checked.evidence.clusters[0].members) == 3
