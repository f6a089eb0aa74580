#!/usr/bin/env python3
"""DuckDB's EXCEPT over the traits tables' Parquet files, as a sync diff reads them (from
storage on every run), median of 5 in one process:

    duckdb_except_files.py WAREHOUSE_TRAITS_DIR
"""
import sys
import time

import duckdb

wh = sys.argv[1]
con = duckdb.connect()
q = (f"SELECT * FROM read_parquet('{wh}/users_traits_day2.parquet') "
     f"EXCEPT SELECT * FROM read_parquet('{wh}/users_traits_day1.parquet')")
times = []
for _ in range(5):
    t = time.perf_counter()
    r = con.execute(q).arrow()
    r = r.read_all() if hasattr(r, "read_all") else r
    times.append(time.perf_counter() - t)
times.sort()
print(f"duckdb {duckdb.__version__} EXCEPT over the Parquet files: median {times[2]:.3f} s "
      f"of {[round(x, 3) for x in times]}, {r.num_rows} rows")
