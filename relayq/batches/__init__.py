"""Batches: the OpenAI Batch API (and inline requests), and Anthropic's Message Batches, on
relayq's job queues."""
