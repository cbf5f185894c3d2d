"""Where CPU went, before and after: two ``--profile`` directories compared by function.

python -m bench.perf.profile_compare BEFORE_DIR AFTER_DIR --jobs 11100 --rate 250

Each process's profiles (``*-api.txt``, ``*-worker0.txt``...; ``--match`` keeps
the files whose name starts with it) are added up per side, and every function
is listed with its samples as a share of the process's and, given the jobs the
profiled blocks ran (``--jobs``: the same on both sides when both ran the same
command) and py-spy's ``--rate``, as milliseconds of CPU per job. The rows are
the functions whose cost grew most, by self time and by inclusive time: what a
change added, not what was always there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.perf.profiling import Tally

__all__ = ["compare", "main", "tallies"]


def tallies(directory: Path, *, match: str) -> dict[str, Tally]:
    """Each process's samples over the profiles in ``directory`` named
    ``{match}...-{process}.txt``."""
    found: dict[str, Tally] = {}
    for path in sorted(directory.glob(f"{match}*.txt")):
        if path.name.endswith(".summary.txt"):
            continue
        process = path.stem.rsplit("-", 1)[-1]
        found.setdefault(process, Tally()).add(path)
    return found


def _cost(count: int, total: int, *, per_job: float | None) -> str:
    share = f"{100 * count / max(total, 1):5.1f}%"
    return share if per_job is None else f"{share} {count * per_job:6.3f}"


def compare(
    before: Tally, after: Tally, *, per_job: float | None, top: int, inclusive: bool
) -> list[str]:
    """Rows of the ``top`` functions whose cost grew most from ``before`` to ``after``
    (per job when ``per_job``, ms per sample per job, is known, else as a share)."""
    b_counts = before.inclusive if inclusive else before.self_time
    a_counts = after.inclusive if inclusive else after.self_time

    def growth(name: str) -> float:
        if per_job is not None:
            return (a_counts[name] - b_counts[name]) * per_job
        return a_counts[name] / max(after.total, 1) - b_counts[name] / max(before.total, 1)

    names = sorted(set(b_counts) | set(a_counts), key=growth, reverse=True)[:top]
    unit = "share" if per_job is None else "share ms/job"
    rows = [f"  {'before ' + unit:>20}  {'after ' + unit:>20}  function"]
    for name in names:
        rows.append(
            f"  {_cost(b_counts[name], before.total, per_job=per_job):>20}  "
            f"{_cost(a_counts[name], after.total, per_job=per_job):>20}  {name}"
        )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.profile_compare")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--match", default="", help="only profiles whose name starts so")
    parser.add_argument("--jobs", type=int, default=None, help="jobs run while profiled")
    parser.add_argument("--rate", type=int, default=100, help="py-spy's --profile-rate")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    before, after = tallies(args.before, match=args.match), tallies(args.after, match=args.match)
    per_job = None if args.jobs is None else 1000 / args.rate / args.jobs
    for process in sorted(set(before) & set(after)):
        b, a = before[process], after[process]
        total = f"{b.total} -> {a.total} samples"
        if per_job is not None:
            total += f", {b.total * per_job:.3f} -> {a.total * per_job:.3f} ms/job"
        print(f"== {process}: {total}")
        for inclusive in (False, True):
            print(f"grew most, {'inclusive' if inclusive else 'self'} time:")
            print("\n".join(compare(b, a, per_job=per_job, top=args.top, inclusive=inclusive)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
