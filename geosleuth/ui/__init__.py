"""``geosleuth ui``: a local web app for chat over a photo (Starlette + server-sent events, vanilla JS, Leaflet).

- ``app.py``: routes (upload, chat turns streamed as server-sent events, sessions, trace, batch results);
- ``sessions.py``: the one adapter over :mod:`geosleuth.agent.chat` (the same engine and SQLite store as the CLI);
- ``views.py``: predictions and traces as the plain JSON the page draws (map layers, tables);
- ``security.py``: the access token and upload limits;
- ``static/``: the page, its script and style, and vendored Leaflet (no CDN, no internet needed).
"""
