"""Batches: the OpenAI Batch API (and inline requests) on relayq's job queues."""
