"""CPU cost of one call of each VLM tool (agent/tools/), with real OCR, gazetteer, geocoder, FAISS gallery and
GeoCLIP heads, and a tiny random CLIP (built locally) as the image encoder.

What it measures: ``time.process_time`` of ``ToolRegistry.call`` (argument validation included) for each tool,
the median of ``--repeats`` calls after one warm-up call (models and GeoNames load during the warm-up, and are
not counted). ``process_time`` counts every thread of this process (onnxruntime's OCR threads included), so it is
CPU time, not latency. What it assumes: a 1024x768 photo (the size perceive hands on at the default
``vlm.max_image_pixels``, synthetic pixels), a 35-photo synthetic gallery and GeoCLIP's 2,000-point sample gallery:
the index searches are cheaper here than over a real million-photo gallery (see bench_index_scale.py and
bench_gps_candidates.py for those). The VLM's own turn between calls is not measured.

    python bench/bench_tools.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CALLS = [
    ("zoom", {"box": {"x0": 0.25, "y0": 0.25, "x1": 0.75, "y1": 0.75}}),
    ("read_text", {}),
    ("read_text", {"box": {"x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 0.4}}),
    ("search_gallery", {"k": 10}),
    ("search_gallery", {"area": {"country": "Japan"}, "k": 5}),
    ("geoclip_candidates", {"k": 10}),
    ("geoclip_candidates", {"area": {"continent": "Europe"}, "k": 10}),
    ("score_location", {"lat": 35.68, "lon": 139.65}),
    ("reverse_geocode", {"lat": 35.0, "lon": 139.0}),
    ("lookup_place", {"name": "Lisboa"}),
    ("lookup_place", {"name": "Lisbonn"}),  # no exact name: the fuzzy search
    ("submit", {"answer": {"clues": [], "continent": "Asia", "country": "Japan", "region": None, "city": None,
                           "latitude": 35.68, "longitude": 139.65, "confidence": 0.5}}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from PIL import ImageDraw, ImageFont

    from geosleuth.agent.retrieve import retrieve
    from geosleuth.agent.runtime import Resources
    from geosleuth.agent.tools.catalog import default_tools
    from geosleuth.agent.tools.registry import ToolContext
    from geosleuth.agent.tools.text_evidence import TextTools
    from geosleuth.config import Config
    from geosleuth.geo import ReverseGeocoder
    from geosleuth.index.build import build_store
    from geosleuth.index.encoders import CLIPImageEncoder, GeoCLIPLocationEncoder
    from geosleuth.index.gps_gallery import GPSGallery, geoclip_gallery_csv
    from geosleuth.index.sources import TableSource
    from geosleuth.index.store import GalleryStore
    from geosleuth.testing.synthetic import make_synthetic_gallery, synthetic_photo
    from geosleuth.testing.tiny_clip import build_tiny_clip

    tmp = Path(tempfile.mkdtemp(prefix="bench_tools_"))
    clip = build_tiny_clip(tmp / "clip")
    encoder = CLIPImageEncoder(str(clip), with_geoclip_head=True, device="cpu", dtype="float32")
    lines = geoclip_gallery_csv().read_text().splitlines()
    (tmp / "gps.csv").write_text("\n".join([lines[0], *lines[1::50]]) + "\n")
    location = GeoCLIPLocationEncoder(device="cpu")
    gps = GPSGallery.load(str(tmp / "gps.csv"), location, cache_dir=None)
    table = make_synthetic_gallery(tmp / "gallery", 5)
    store = GalleryStore.open(build_store(TableSource(table), tmp / "store", encoder=encoder).path,
                              image_encoder=encoder)
    config = Config.model_validate({
        "encoders": {"image_model": str(clip), "device": "cpu", "dtype": "float32"},
        "index": {"gps_gallery": str(tmp / "gps.csv")}, "vlm": {"backend": "none"},
    })
    geocoder = ReverseGeocoder()
    resources = Resources(config=config, image_encoder=encoder, geocoder=geocoder, location_encoder=location,
                          gps_gallery=gps, store=store, text_tools=TextTools.from_config(config.text))
    photo = synthetic_photo("JP", seed=7).resize((1024, 768))
    font_path = Path(__import__("matplotlib").__file__).parent / "mpl-data/fonts/ttf/DejaVuSans-Bold.ttf"
    ImageDraw.Draw(photo).text((60, 60), "Lisboa 12 km", font=ImageFont.truetype(str(font_path), 64), fill="white")
    embeddings = encoder.encode([photo])
    context = ToolContext(image=photo, embeddings=embeddings, resources=resources,
                          retrieval=retrieve(embeddings, store, gps, config, geocoder))
    registry = default_tools(resources)

    print(f"CPU time per tool call (process_time, all threads), median of {args.repeats} after 1 warm-up; "
          "1024x768 synthetic photo with one sign, 35-photo gallery, 2,000-point GPS gallery")
    try:
        for name, arguments in CALLS:
            registry.call(name, arguments, context)  # warm-up: loads OCR / GeoNames on first use
            cpu = []
            for _ in range(args.repeats):
                started = time.process_time()
                registry.call(name, arguments, context)
                cpu.append(time.process_time() - started)
            label = f"{name}({', '.join(f'{k}={v}' for k, v in arguments.items() if k != 'answer')})"
            print(f"  {label[:78]:78s} {statistics.median(cpu) * 1000:8.1f} ms")
    finally:
        store.close()


if __name__ == "__main__":
    main()
