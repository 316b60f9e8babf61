"""Vision-language model backends and the vLLM server launcher."""
