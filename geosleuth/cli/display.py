"""How a prediction reads in the terminal: place, coordinate, status, confidence, map link,
alternatives, clues and failures (shared by ``locate`` and ``chat``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from geosleuth.types import Coordinate, Prediction

MAX_SHOWN_CLUES = 5


def failed_prediction(path: str, exc: BaseException) -> Prediction:
    """An explicit failure (no coordinate) for an image that could not be processed."""
    from geosleuth.types import ImageRef, Prediction, StepFailure

    reason = str(exc) or type(exc).__name__
    return Prediction(
        image=ImageRef(path=path), failure_reason=reason, failures=[StepFailure(step="perceive", error=reason)]
    )


def exif_gps_of(prediction: Prediction, path: str) -> Coordinate | None:
    """The file's EXIF GPS, from the prediction's image record or read from the file."""
    exif = prediction.image.exif
    if exif is not None:
        return exif.gps
    from geosleuth.imageio import read_exif

    try:
        return read_exif(path).gps
    except GeosleuthError:
        return None


def _coord(lat: float, lon: float) -> str:
    return f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}"


def degraded_note(prediction: Prediction) -> str:
    """What a degraded answer lacked, in words."""
    return f"answered without {', '.join(prediction.missing_stages)} (a stage the configuration asks for)"


def print_prediction(
    console: Console, prediction: Prediction, path: str, *, exif_gps: Coordinate | None = None
) -> None:
    """A readable summary: place, coordinate, confidence, map link, status (when not ok), EXIF GPS,
    alternatives, clues, failures.

    Model text (clues, places) is rendered as plain text, never as rich markup.
    """
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    from geosleuth.agent.trace import osm_link
    from geosleuth.geo import geodesic_km

    style = "red" if not prediction.ok else "yellow" if prediction.degraded else "green"
    parts: list[RenderableType] = [Rule(Text(path), align="left", style=style)]
    if prediction.ok:
        assert prediction.lat is not None and prediction.lon is not None
        place = prediction.place.hierarchy() if prediction.place else "unknown place"
        parts.append(Text(place, style="bold"))
        line = Text.assemble((_coord(prediction.lat, prediction.lon), "cyan"))
        if prediction.confidence is not None:
            line.append(f"   confidence {prediction.confidence:.2f} (P within 25 km)")
        parts.append(line)
        if prediction.levels is not None:
            parts.append(Text(prediction.levels.summary(), style="dim"))
        url = osm_link(prediction.lat, prediction.lon)
        parts.append(Text.assemble(("map ", "dim"), (url, f"link {url}")))
        if prediction.degraded:
            parts.append(Text.assemble(("status degraded: ", "bold yellow"), degraded_note(prediction)))
    else:
        parts.append(Text.assemble(("no location: ", "bold red"), prediction.failure_reason or "unknown reason"))
    if exif_gps is not None:
        line = Text.assemble(("EXIF GPS ", "bold"), _coord(exif_gps.lat, exif_gps.lon))
        if prediction.ok:
            km = float(geodesic_km(prediction.lat, prediction.lon, exif_gps.lat, exif_gps.lon))
            line.append(f"   {km:,.1f} km from the prediction")
        parts.append(line)
    if prediction.alternatives:
        table = Table(title="alternatives", title_justify="left", box=None, pad_edge=False, header_style="bold")
        for column in ("#", "coordinate", "place", "source", "score", "conf."):
            table.add_column(column, justify="right" if column in ("#", "score", "conf.") else "left")
        for rank, c in enumerate(prediction.alternatives, start=1):
            table.add_row(str(rank), _coord(c.lat, c.lon), Text(c.place.hierarchy() if c.place else ""),
                          c.source.value, f"{c.score:.3f}", f"{c.confidence:.2f}")
        parts.append(table)
    if prediction.clues:
        parts.append(Text("main clues", style="bold"))
        for clue in prediction.clues[:MAX_SHOWN_CLUES]:
            parts.append(Text.assemble("  • ", clue.observation, (" → ", "dim"), (clue.implication, "italic")))
    for failure in prediction.failures:
        if failure.error != prediction.failure_reason:  # already shown above
            parts.append(Text.assemble((f"{failure.step} failed: ", "yellow"), failure.error))
    for part in parts:
        # soft_wrap for the link line: a URL folded or cropped by rich cannot be clicked or copied.
        console.print(part, soft_wrap=isinstance(part, Text) and part.plain.startswith("map https://"))


