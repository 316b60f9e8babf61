"""Tools that look at the photo again: ``zoom`` (a closer look at a box) and ``read_text`` (real OCR)."""

from __future__ import annotations

import math

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.agent.tools.arguments import Box
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolError, ToolObservation
from geosleuth.agent.tools.text_evidence import read_text_evidence
from geosleuth.agent.verify import candidate_pool
from geosleuth.errors import ImageLoadError
from geosleuth.imageio import load_image
from geosleuth.types import RetrievalResult

# At most this many lines / places are quoted back to the model (the trace data keeps them all).
MAX_LINES_SHOWN = 12
MAX_PLACES_SHOWN = 5


def source_image(context: ToolContext) -> Image.Image:
    """The photo at the best resolution there is: the original file when the context names it (a box of
    a big photo holds detail the downscaled copy lost), else the image perceive loaded."""
    if context.image_path is None:
        return context.image
    try:
        return load_image(context.image_path).image
    except ImageLoadError as exc:
        raise ToolError(f"cannot reload the photo at full resolution: {exc}") from None


def fit_to_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` resized (up or down, aspect ratio kept) to about ``max_pixels`` pixels, in RGB."""
    width, height = image.size
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


class ZoomArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    box: Box = Field(description="the part of the photo to look at closely")


class ZoomTool(Tool):
    name = "zoom"
    description = (
        "Look closely at part of the photo: the box (fractions 0..1 of width and height) is cropped and "
        "enlarged, and you see it next."
    )
    arguments = ZoomArguments

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, ZoomArguments)
        photo = source_image(context)
        left, top, right, bottom = args.box.pixels(photo.size)
        crop = photo.crop((left, top, right, bottom))
        enlarged = fit_to_pixels(crop, context.resources.config.vlm.max_image_pixels)
        factor = enlarged.width / crop.width
        text = (
            f"Zoomed into box {args.box.describe()}: pixels ({left}, {top})-({right}, {bottom}) of the "
            f"{photo.width}x{photo.height} photo, scaled {factor:.2f}x to {enlarged.width}x{enlarged.height}. "
            "The crop follows."
        )
        data = {"box": args.box.model_dump(), "pixels": [left, top, right, bottom],
                "size": [enlarged.width, enlarged.height], "scale": round(factor, 4)}
        return ToolObservation(text=text, data=data, images=(enlarged,))


class ReadTextArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    box: Box | None = Field(None, description="the part of the photo to read; null reads the whole photo")


class ReadTextTool(Tool):
    """The whole photo is read as perceive read it (its text evidence when the context has it, else the
    same reading of the same image); a box is read in the full-resolution original when the context names
    its file."""

    name = "read_text"
    description = (
        "Read the text in the photo (or in a box of it) with OCR: the lines read, their language, and the "
        "places they name (each becomes a candidate)."
    )
    arguments = ReadTextArguments

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, ReadTextArguments)
        tools = context.resources.text_tools
        if tools is None:
            raise ToolError("read_text is unavailable: OCR is off in this run (turn it on with text.ocr = true)")
        if args.box is None and context.text is not None:
            evidence = context.text  # perceive already read the whole photo: the same reading, not a second one
        else:
            photo = source_image(context) if args.box is not None else context.image
            evidence = read_text_evidence(photo, tools, args.box.pixels(photo.size) if args.box is not None else None)
        where = f"box {args.box.describe()}" if args.box is not None else "the whole photo"
        candidates = tuple(candidate_pool(RetrievalResult(), [], text=evidence))
        data = {"box": args.box.model_dump() if args.box is not None else None,
                "evidence": evidence.model_dump(mode="json")}
        if not evidence.regions:
            return ToolObservation(text=f"No readable text in {where}.", data=data)
        lines = [f'"{r.text}" (OCR confidence {r.confidence:.2f})' for r in evidence.regions[:MAX_LINES_SHOWN]]
        more = len(evidence.regions) - MAX_LINES_SHOWN
        parts = [f"Read {len(evidence.regions)} line(s) in {where}: " + "; ".join(lines)
                 + (f"; and {more} more" if more > 0 else "") + "."]
        if evidence.languages:
            guesses = ", ".join(f"{g.language} {g.probability:.2f}" for g in evidence.languages[:3])
            parts.append(f"Language guess: {guesses}.")
        if evidence.scripts:
            parts.append(f"Scripts: {', '.join(evidence.scripts)}.")
        if evidence.places:
            places = [
                f"{m.name} ({m.country_code}, {m.lat:.4f}, {m.lon:.4f}, pop. {m.population:,}; read as "
                f"'{m.matched_name}', similarity {m.similarity:.2f})"
                for m in evidence.places[:MAX_PLACES_SHOWN]
            ]
            parts.append(f"Places named ({len(evidence.places)}, each now a candidate): " + "; ".join(places) + ".")
        else:
            parts.append("No known place is named in this text (no candidate).")
        return ToolObservation(text=" ".join(parts), data=data, candidates=candidates)
