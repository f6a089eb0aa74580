#!/usr/bin/env python3
"""The reverse-ETL traits tables at a size of our choosing, with ../shared/bench/gen.py's own
generator (same columns, 1% changed and 0.5% new on day 2), without the rest of its workload.

    gen_traits.py ROWS [OUT]     e.g. gen_traits.py 10000000  -> ../shared/bench/data/traits10000000

The other warehouse tables are written too, at 1,000 rows (the generator makes them together).
Run it with the bench's Python (../shared/bench/.venv/bin/python).
"""
import os
import sys

LAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")
sys.path.insert(0, LAB)
import gen  # noqa: E402

rows = int(sys.argv[1])
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(LAB, "data", f"traits{rows}")
os.makedirs(out, exist_ok=True)
gen.gen_warehouse(out, 42, 1_000, 1_000, rows)
print(out)
