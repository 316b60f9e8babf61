"""Tools: the functions that look at a photo or at the world's geography on demand.

Two kinds live here. The text tools (OCR model, gazetteer, language identifier: plain functions or small
objects loaded once per process) take and return the typed objects of ``geosleuth.types``; the fixed pipeline
calls them from its stages (perceive reads the text in every photo). The VLM's tools (``registry.py``,
``catalog.py`` and the ``*_tools.py`` / ``submit.py`` modules) wrap them and the indexes for a tool-using model.

Import rule: tools may import ``geosleuth`` core modules, ``geosleuth.index`` and ``geosleuth.agent.answers``,
and the public functions of the retrieve and verify stages (``agent/retrieve.py``: the gallery and GPS-gallery
searches; ``agent/verify.py``: the candidate pool and scoring; ``agent/fusion.py``) so that a tool searches and
judges exactly as the pipeline does. They never import the graph, the reason stage or another stage's internals.
"""
