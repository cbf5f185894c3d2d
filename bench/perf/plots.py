"""The run's plots (matplotlib, PNG), drawn from its JSON results alone.

- ``bench-latency-cdf.png``: the distribution of sync-path latency and of
  streaming time to first token, direct call against relayq.
- ``bench-throughput-depth.png``: completions per second against the number
  in flight, direct call against relayq.
- ``bench-soak-rss.png``: the worker's and the API's RSS over the soak.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def _save(figure: Any, out: Path) -> None:
    """Lay out, write and release one figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def _cdf(axes: Any, samples: list[float], label: str) -> None:
    ordered = sorted(samples)
    if not ordered:
        return
    shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
    axes.plot(ordered, shares, label=label)


def _latency_cdf(results: dict[str, Any], out: Path) -> bool:
    import matplotlib.pyplot as plt

    panels = [
        (name, title)
        for name, title in (
            ("sync-latency", "POST /v1/chat/completions, 1 client"),
            ("streaming", "stream: true, time to first token"),
        )
        if results["scenarios"].get(name, {}).get("data", {}).get("samples_ms")
    ]
    if not panels:
        return False
    figure, axes_list = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axes, (name, title) in zip(axes_list[0], panels, strict=True):
        samples = results["scenarios"][name]["data"]["samples_ms"]
        _cdf(axes, samples["direct"], "direct call to the mock")
        _cdf(axes, samples["relayq"], "through relayq")
        axes.set_xscale("log")
        axes.set_xlabel("ms (log scale)")
        axes.set_ylabel("share of calls")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    _save(figure, out)
    return True


def _throughput_depth(results: dict[str, Any], out: Path) -> bool:
    import matplotlib.pyplot as plt

    sweep = results["scenarios"].get("throughput", {}).get("data", {}).get("sweep")
    if not sweep:
        return False
    depths = sorted(int(d) for d in sweep)
    figure, axes = plt.subplots(figsize=(6, 4))
    for side, label in (("direct", "direct calls (ceiling)"), ("relayq", "jobs through relayq")):
        medians = []
        for depth in depths:
            values = sorted(
                r[side] for r in sweep[str(depth)]["repetitions"] if r.get(side) is not None
            )
            medians.append(values[len(values) // 2] if values else float("nan"))
        axes.plot(depths, medians, marker="o", label=label)
    axes.set_xlabel("calls / jobs in flight")
    axes.set_ylabel("completions per second")
    axes.set_title("Throughput against depth, mock answering in 1 s")
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(figure, out)
    return True


def _soak(results: dict[str, Any], out: Path) -> bool:
    import matplotlib.pyplot as plt

    samples = results["scenarios"].get("soak", {}).get("data", {}).get("samples")
    if not samples:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    times = [s["t"] for s in samples]
    axes.plot(times, [s["worker_mb"] for s in samples], label="worker RSS")
    axes.plot(times, [s["api_mb"] for s in samples], label="API RSS")
    warmup = results["scenarios"]["soak"]["data"].get("warmup_seconds")
    if warmup:
        axes.axvline(warmup, color="grey", linestyle=":", label="end of warm-up")
    axes.set_xlabel("seconds into the soak")
    axes.set_ylabel("MiB")
    axes.set_title("RSS over the soak")
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(figure, out)
    return True


def write_plots(results: dict[str, Any], directory: Path) -> list[Path]:
    """Write every plot the results have data for; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        ("bench-latency-cdf.png", _latency_cdf),
        ("bench-throughput-depth.png", _throughput_depth),
        ("bench-soak-rss.png", _soak),
    ):
        path = directory / name
        if draw(results, path):
            written.append(path)
    return written
