"""The agent: the locate pipeline and everything that runs it.

Owns the stages (perceive -> retrieve -> reason -> verify -> decide, one module or subpackage each),
the LangGraph wiring and its state, the once-per-process resources the graph runs with, and what is
built on the pipeline: batch runners, chat sessions, traces and exports. May import the shared core
of ``geosleuth`` (types, geo, config, errors, imageio, vlm), ``geosleuth.index`` and
``geosleuth.prompts``; never ``geosleuth.eval``, ``geosleuth.cli`` or ``geosleuth.api``, which sit above
it. Stages exchange the typed objects of ``geosleuth.types``; a stage never imports another stage's
module (the graph wires them) nor reads another module's trace JSON.
"""
