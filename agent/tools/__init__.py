"""Tools: the functions that look at a photo or at the world's geography on demand.

Each tool is a plain function or a small object loaded once per process (OCR model, gazetteer, language
identifier), taking and returning the typed objects of ``geosleuth.types``. The fixed pipeline calls them from
its stages (perceive reads the text in every photo); a tool-using agent can call the same functions. Tools may
import ``geosleuth`` core modules and ``geosleuth.index``; they never import a stage module of ``agent/``.
"""
