"""Retrieval infrastructure: image and location encoders, the GPS gallery, the image-gallery store.

Owns the encoder Protocols and their registry (``encoders``), GeoCLIP's GPS gallery and its cached
embeddings (``gps_gallery``), the FAISS gallery store and its ``ImageGallery`` Protocol (``store``),
and building stores from photo folders, tables or precomputed embeddings (``build``, ``sources``).
May import only the shared core of ``geosleuth`` (types, geo, config, errors, imageio, models); never
``geosleuth.agent``, ``geosleuth.eval``, ``geosleuth.prompts`` or the CLI. Heavy libraries (torch,
transformers, faiss, geoclip) are imported when an encoder or store is created, not on import.
"""
