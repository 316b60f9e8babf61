"""``agent.mode = tools``: the VLM chooses its own tools in a bounded reason ⇄ tools loop.

- ``state.py``: the loop's state and its budgets (tool calls, generated tokens, wall time);
- ``prompts.py``: the tools as the model sees them and the versioned ``geo_tools`` prompt;
- ``graph.py``: the LangGraph subgraph (model turn ⇄ tool calls, ends on submit or a spent budget);
- ``node.py``: the locate graph's reason step in tools mode: runs the loop for one photo and hands
  verify what it found (the submitted answer as a VLM hypothesis, tool-proposed candidates);
- ``fallback.py``: a server that cannot call tools, found once: the run uses the fixed pipeline.
"""
