"""Watchlist screening quality and latency on a generated corpus (issue 4, REGULATION.md L3).

The corpus (``tests/kyc/corpus.py``, synthetic names only) holds a list of N entries, half
Chinese and half Western, and queries of several kinds: the listed name as written,
transliterated to pinyin in several orders, with tokens reordered, with a typo, with accents
or full-width letters, and near misses that must match nothing. Every query is screened
in process against the whole list.

Reported per query kind and overall, at three thresholds: recall (listed entries found),
precision (matches that were right), and latency p50 / p95 / p99 per name. The anchor in the
same run is an exact lookup of the case-folded name in a dict — what screening costs when
it finds only identical spellings — so the ratio says what fuzzy, cross-script matching
costs on top.

    .venv/bin/python bench/screening.py [--entries 50000] [--queries 5000]

Goal (issue 4): p95 ≤ 10 ms per name against 50,000 entries. Writes
``bench/results/screening.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custodia.kyc.screening import ScreeningIndex
from tests.kyc.corpus import Query, make_corpus

RESULTS = ROOT / "bench" / "results"
THRESHOLDS = (80, 85, 90)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=5_000)
    args = parser.parse_args()

    entries, queries = make_corpus(args.entries, args.queries, seed=20261130)
    started = time.perf_counter()
    index = ScreeningIndex(entries)
    build_s = time.perf_counter() - started

    # The anchor: exact, case-folded lookups only.
    exact = defaultdict(set)
    for entry in entries:
        exact[entry.name.casefold()].add(entry.id)
    anchor_ms = []
    for q in queries:
        t = time.perf_counter()
        exact.get(q.name.casefold(), set())
        anchor_ms.append((time.perf_counter() - t) * 1000)

    lines = [
        "# Screening",
        "",
        (
            f"{args.entries:,} list entries, {len(queries):,} queries (synthetic corpus), in process; "
            f"index built in {build_s:.1f} s."
        ),
        "",
    ]
    for threshold in THRESHOLDS:
        by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # tp, fn, fp
        latency = []
        for q in queries:
            t = time.perf_counter()
            matches = index.screen(
                q.name,
                date_of_birth=q.date_of_birth,
                nationality=q.nationality,
                threshold=threshold,
            )
            latency.append((time.perf_counter() - t) * 1000)
            _count(by_kind[q.kind], q, {m.entry.id for m in matches})
        total = [sum(c[i] for c in by_kind.values()) for i in range(3)]
        lines += [
            f"## Threshold {threshold}",
            "",
            "| query kind | queries | recall | wrong matches |",
            "|---|---|---|---|",
        ]
        for kind, (tp, fn, fp) in sorted(by_kind.items()):
            recall = f"{tp / (tp + fn):.4f}" if tp + fn else "—"
            lines.append(
                f"| {kind} | {tp + fn if tp + fn else _misses(queries, kind):,} | {recall} | {fp} |"
            )
        tp, fn, fp = total
        lines += [
            "",
            (
                f"Overall: recall {tp / (tp + fn):.4f}, precision {tp / (tp + fp) if tp + fp else 1:.4f} "
                f"({tp} found, {fn} missed, {fp} wrong matches)."
            ),
            "",
            (
                f"Latency per name: p50 {statistics.median(latency):.2f} ms, p95 "
                f"{_percentile(latency, 0.95):.2f} ms, p99 {_percentile(latency, 0.99):.2f} ms, max "
                f"{max(latency):.2f} ms; anchor (exact dict lookup) p50 "
                f"{statistics.median(anchor_ms) * 1000:.1f} µs; median ratio "
                f"{statistics.median(latency) / statistics.median(anchor_ms):,.0f}×."
            ),
            "",
        ]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "screening.md").write_text(table + "\n")


def _count(cell: list[int], q: Query, found: set[int]) -> None:
    if q.expected is None:
        cell[2] += len(found)
        return
    if q.expected in found:
        cell[0] += 1
    else:
        cell[1] += 1
    cell[2] += len(found - {q.expected})


def _misses(queries: list[Query], kind: str) -> int:
    return sum(1 for q in queries if q.kind == kind)


if __name__ == "__main__":
    main()
