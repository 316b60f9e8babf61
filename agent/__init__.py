"""The agent: a LangGraph pipeline perceive -> retrieve -> reason -> verify -> decide."""
