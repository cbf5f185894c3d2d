"""Sampling profiles of the API and workers (py-spy), and their summaries.

With ``--profile DIR`` each scenario's relayq phases are recorded by py-spy
attached to the API and worker processes (``--nonblocking``: the processes
are not paused to sample). The raw output is collapsed stacks, one line per
distinct stack with its sample count; :func:`summarize` turns it into the
functions with the most samples on CPU, by self time and by inclusive time.
Profiled runs are for reading profiles, not figures: sampling costs a little.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.perf.stack import PerfStack

__all__ = ["Profiler", "Tally", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return found


class Profiler:
    """Records profiles into ``directory``; does nothing when it is None."""

    def __init__(self, directory: Path | None, *, rate: int = 100) -> None:
        self.directory = directory
        self.rate = rate
        self.recorded: list[Path] = []
        self._labels: Counter[str] = Counter()
        """How often each label was recorded: a repetition's profile gets a file of its own
        (``-r2``, ``-r3``...) instead of replacing the one before."""

    @asynccontextmanager
    async def recording(self, label: str, stack: PerfStack) -> AsyncIterator[None]:
        if self.directory is None:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._labels[label] += 1
        if self._labels[label] > 1:
            label = f"{label}-r{self._labels[label]}"
        targets = {"api": stack.api, **{f"worker{i}": w for i, w in enumerate(stack.workers)}}
        spies: list[tuple[subprocess.Popen[bytes], Path]] = []
        for name, process in targets.items():
            if process is None:
                continue
            out = self.directory / f"{label}-{name}.txt"
            command = [_py_spy(), "record", "--pid", str(process.pid), "--rate", str(self.rate)]
            command += ["--format", "raw", "--nonblocking", "--output", str(out)]
            spies.append((_start(command), out))
        await asyncio.sleep(0.5)  # attached before the load starts
        try:
            yield
        finally:
            for spy, _ in spies:
                if spy.poll() is None:
                    spy.send_signal(signal.SIGINT)
            for spy, out in spies:
                try:
                    await asyncio.to_thread(spy.wait, 60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
                if out.exists():
                    self.recorded.append(out)
                    out.with_suffix(".summary.txt").write_text(summarize(out))


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


_PROJECT_FILE = re.compile(r"/((?:relayq|api|worker|bench)/[^/].*)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        # The project's own files, wherever the checkout is (a worktree, another commit's).
        project = _PROJECT_FILE.search(path)
        if project is not None:
            path = project.group(1)
    return f"{path}:{match.group('func')}"


@dataclass
class Tally:
    """Samples on CPU by function over one or more profiles: where each was running
    (``self_time``) and every function on the stack (``inclusive``)."""

    total: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def add(self, path: Path) -> None:
        """Count the samples of ``path`` (py-spy raw output: collapsed stacks)."""
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
            # The first frame is the thread's name ("process 1:thread ...") in raw output.
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            self.total += count
            self.self_time[frames[-1]] += count
            for name in set(frames):
                self.inclusive[name] += count


def summarize(path: Path, *, top: int = 40) -> str:
    """The functions with most samples in ``path`` (py-spy raw output): self and inclusive."""
    tally = Tally()
    tally.add(path)
    total = tally.total
    lines = [f"{path.name}: {total} samples on CPU", "", "self time:"]
    for name, count in tally.self_time.most_common(top):
        lines.append(f"  {100 * count / max(total, 1):5.1f}%  {name}")
    lines += ["", "inclusive time:"]
    for name, count in tally.inclusive.most_common(top):
        lines.append(f"  {100 * count / max(total, 1):5.1f}%  {name}")
    return "\n".join(lines) + "\n"
