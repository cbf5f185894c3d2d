"""relayq's performance benchmarks: each figure beside the direct call to the same mock.

``python -m bench.perf`` starts a mock upstream, a Redis, a database, the API
and workers on loopback, runs the scenarios, stops everything it started and
writes a JSON result and a Markdown report. docs/benchmarks.md has the usage
and the figures.
"""
