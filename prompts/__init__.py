"""Versioned prompt templates, their renderer, and the VLM answer schema."""
