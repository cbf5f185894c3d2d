"""relayq: an async, queue-backed job processor for LLM completions."""

__version__ = "0.1.0"
