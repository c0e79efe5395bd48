"""What every bench script shares: the command line (``--quick``, ``--json``) and the printed
table of the rows its ``run(quick)`` returns (``bench/run_all`` collects the same rows)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence


def shown(value: object) -> str:
    """A figure as printed: thousands separators, floats to two decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.2f}" if math.isfinite(value) else str(value)
    return f"{value:,}"


def print_rows(rows: Sequence[dict]) -> None:
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        flag = {True: "ok", False: "MISSED", None: ""}[r["ok"]]
        print(f"{r['name']:<{width}}  {shown(r['value']):>14} {r['unit']:<10} goal {str(r['goal']):<30} {flag}")


def bench_main(run: Callable[[bool], list[dict]], doc: str | None, quick_help: str, *,
               header: Callable[[], str] | None = None, argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the bench, print its rows (or JSON); exit 1 if a goal is missed."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    rows = run(args.quick)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        if header is not None:
            print(header())
        print_rows(rows)
    return 0 if all(r["ok"] is not False for r in rows) else 1
