"""Retrieval infrastructure: image and location encoders, the GPS gallery, the image-gallery store.

Owns the encoder Protocols and their registry (``encoders``), GeoCLIP's GPS gallery and its cached
embeddings (``gps_gallery``), the FAISS gallery store and its ``ImageGallery`` Protocol (``store``;
its manifest ``manifest``, FAISS index types ``faiss_index``, metadata tables ``gallery_metadata``),
and building stores from photo folders, tables or precomputed embeddings (``build``, with its
encode phase ``build_shards`` and index phase ``build_index``; ``sources``; ``build_ray`` is the Ray
engine of the encode phase). May import only the shared core of ``geosleuth``
(types, geo, config, errors, file and image I/O, models, devices, ray_session); never
``geosleuth.agent``, ``geosleuth.eval``, ``geosleuth.prompts`` or the interfaces. Heavy libraries
(torch, transformers, faiss, geoclip, ray) are imported when an encoder or store is created, not on
import.
"""
