"""Prompts: the versioned template files, their renderer, and the VLM answer schema.

Owns ``templates/*.md`` (each with a front-matter version; traces record the id, version and hash),
the renderer that loads and fills them, and ``GeoAnswer``, the one schema used both to ask the VLM for
JSON and to validate its reply. May import only the shared core of ``geosleuth`` (errors, types,
config): it knows nothing of stages, backends or models, so any stage or backend can use it.
"""
