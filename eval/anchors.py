"""Published results to compare against: % of images within 1 / 25 / 200 / 750 / 2500 km.

Copied as printed in each paper (percent, two decimals), via the table in shared/PLATFORM.md.
Those papers compute geodesic distances (geopy, WGS-84), some haversine with R = 6371 km, and
several of their codebases turn unparseable model outputs into (0, 0) instead of counting them as
failures; our numbers count failures as misses, so small differences are not like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

ANCHOR_THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)


@dataclass(frozen=True)
class PublishedResult:
    system: str
    dataset: str  # "im2gps3k" | "yfcc4k"
    acc_percent: tuple[float, float, float, float, float]  # at ANCHOR_THRESHOLDS_KM, as printed
    reference: str

    def acc_fraction(self, threshold_km: int) -> float:
        """Accuracy at one threshold as a fraction in [0, 1] (our metrics' unit)."""
        return self.acc_percent[ANCHOR_THRESHOLDS_KM.index(threshold_km)] / 100.0


_GEOCLIP = "Vivanco Cepeda et al., GeoCLIP, NeurIPS 2023"
_IMG2LOC = "Zhou et al., Img2Loc, SIGIR 2024"
_G3 = "Jia et al., G3, NeurIPS 2024"
_GEORANKER = "Jia et al., GeoRanker, 2025"

PUBLISHED_RESULTS: tuple[PublishedResult, ...] = (
    PublishedResult("GeoCLIP", "im2gps3k", (14.11, 34.47, 50.65, 69.67, 83.82), _GEOCLIP),
    PublishedResult("Img2Loc (GPT-4V)", "im2gps3k", (17.10, 45.14, 57.87, 72.91, 84.68), _IMG2LOC),
    PublishedResult("G3 (GPT-4V)", "im2gps3k", (16.65, 40.94, 55.56, 71.24, 84.68), _G3),
    PublishedResult("G3 (LLaVA-Next-8B)", "im2gps3k", (14.31, 35.87, 49.42, 66.93, 81.78), _G3),
    PublishedResult("GeoRanker", "im2gps3k", (18.79, 45.05, 61.49, 76.31, 89.29), _GEORANKER),
    PublishedResult("GeoCLIP", "yfcc4k", (9.59, 19.31, 32.63, 55.0, 74.69), _GEOCLIP),
    PublishedResult("Img2Loc (GPT-4V)", "yfcc4k", (14.11, 29.57, 41.40, 59.27, 76.88), _IMG2LOC),
    PublishedResult("G3 (GPT-4V)", "yfcc4k", (23.99, 35.89, 46.98, 64.26, 78.15), _G3),
    # G3 (LLaVA-Next-8B) reports no YFCC4K numbers.
    PublishedResult("GeoRanker", "yfcc4k", (32.94, 43.54, 54.32, 69.79, 82.45), _GEORANKER),
)


def anchors_for(dataset: str) -> list[PublishedResult]:
    """Published results on ``dataset`` (case-insensitive); empty for datasets without any."""
    key = dataset.lower()
    return [result for result in PUBLISHED_RESULTS if result.dataset == key]
