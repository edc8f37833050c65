"""The slowest tests of a `./pants test ::` run, from the JUnit reports Pants writes.

Pants runs each test file in its own pytest process, so pytest's `--durations` ranks the tests
of one file only; this ranks them across the suite (cached results included: Pants writes
their reports too). `tests/run.sh` prints it after the run: the suite's time budget in view.

    python tests/slowest.py [REPORT_DIR] [--top N]      (default: dist/test/reports, 20)
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["slowest"]


def slowest(report_dir: Path, top: int = 20) -> list[tuple[float, str]]:
    """(seconds, test id) of the `top` slowest test cases in the JUnit XML files of
    `report_dir`, slowest first (ties by id, so the listing is stable)."""
    cases: list[tuple[float, str]] = []
    for report in sorted(report_dir.glob("*.xml")):
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            cases.append((float(case.get("time") or 0.0), name))
    cases.sort(key=lambda item: (-item[0], item[1]))
    return cases[:top]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", nargs="?", default="dist/test/reports", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    if not args.report_dir.is_dir():
        print(f"slowest: no test reports in {args.report_dir}", file=sys.stderr)
        return 2
    ranked = slowest(args.report_dir, args.top)
    total = len(ranked)
    print(f"slowest {total} test{'s' if total != 1 else ''} (from {args.report_dir}):")
    for seconds, name in ranked:
        print(f"{seconds:9.2f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
