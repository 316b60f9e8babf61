"""The agent: the locate pipeline and everything that runs it.

Owns the stages (perceive -> retrieve -> reason -> verify -> decide, one module or subpackage each),
what they use (tools such as OCR and the gazetteer, the evidence fusion and its calibrated
confidences), the LangGraph wiring and its state, the once-per-process resources the graph runs with,
and what is built on the pipeline: batch engines, chat sessions, traces and exports. May import the
shared core of ``geosleuth`` (types, geo, config, errors, file and image I/O, vlm), ``geosleuth.index``
and ``geosleuth.prompts``; never ``geosleuth.eval``, ``geosleuth.cli`` or ``geosleuth.ui``, which sit
above it (a batch engine may build a ``geosleuth.api.Geolocator`` per worker; a stage never does).
Stages exchange the typed objects of ``geosleuth.types``; a stage never imports another stage's module
(the graph wires them) nor reads another module's trace JSON.
"""
