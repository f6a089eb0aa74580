"""The demo's customer-health and lead-score models, run by DuckDB on the same source rows,
must give the rows Tideway's models wrote.

    python models_duckdb.py PROJECT_DIR

Reads every source table with the `deltalake` package (an independent Delta reader), runs
each model's SQL in DuckDB (headers and template calls removed, as dbt would render them),
and compares each mart with Tideway's table, sorted, floats to 1e-6 relative. Exits 1 with
the first differences.
"""
import math
import os
import re
import sys

import deltalake
import duckdb

project = sys.argv[1]
lake = os.path.join(project, ".tideway", "lake")
models_dir = os.path.join(project, "models")
MARTS = ["lifetime_value", "satisfaction", "engagement", "customer_health", "lead_score"]

con = duckdb.connect()


def table(schema, name):
    return deltalake.DeltaTable(os.path.join(lake, schema, name)).to_pyarrow_table()


for schema in ("billingdb", "zendesk", "events"):
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
for schema, name in [("billingdb", "customers"), ("billingdb", "orders"), ("billingdb", "invoices"),
                     ("zendesk", "tickets"), ("zendesk", "ticket_metrics"),
                     ("events", "webevents"), ("events", "deviceevents")]:
    arrow = table(schema, name)
    con.register(f"_src_{schema}_{name}", arrow)
    con.execute(f"CREATE TABLE {schema}.{name} AS SELECT * FROM _src_{schema}_{name}")


def render(path):
    sql = open(path).read()
    sql = re.sub(r"/\*.*?\*/", "", sql, flags=re.S)          # native and Datacoral headers
    sql = re.sub(r"\{\{\s*config\(.*?\)\s*\}\}", "", sql)
    sql = re.sub(r"\{\{\s*ref\('([a-z_]+)'\)\s*\}\}",
                 lambda m: ("staging." if m.group(1).startswith("stg_") else "marts.") + m.group(1), sql)
    return sql


con.execute("CREATE SCHEMA staging")
con.execute("CREATE SCHEMA marts")
for f in sorted(os.listdir(os.path.join(models_dir, "staging"))):
    con.execute(f"CREATE VIEW staging.{f[:-4]} AS {render(os.path.join(models_dir, 'staging', f))}")
for m in MARTS:
    con.execute(f"CREATE TABLE marts.{m} AS {render(os.path.join(models_dir, 'marts', m + '.sql'))}")


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    if hasattr(a, "tzinfo") and hasattr(b, "tzinfo"):
        return a.replace(tzinfo=None) == b.replace(tzinfo=None)
    return a == b


failures = []
for m in MARTS:
    ours = table("marts", m)
    cols = ours.column_names
    result = con.execute(f"SELECT {', '.join(cols)} FROM marts.{m}")
    theirs = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    theirs = theirs()
    key = cols[0]
    a = sorted(ours.to_pylist(), key=lambda r: (r[key] is None, r[key]))
    b = sorted(theirs.to_pylist(), key=lambda r: (r[key] is None, r[key]))
    if len(a) != len(b):
        failures.append(f"{m}: {len(a)} rows in Tideway, {len(b)} in DuckDB")
        continue
    bad = [(x, y, c) for x, y in zip(a, b) for c in cols if not same(x[c], y[c])]
    if bad:
        x, y, c = bad[0]
        failures.append(f"{m}: {len(bad)} cells differ; first: column {c}, Tideway {x[c]!r} vs DuckDB {y[c]!r} in row {x}")
    else:
        print(f"{m}: {len(a)} rows, {len(cols)} columns equal")
if failures:
    print("\n".join(failures))
sys.stdout.flush()
# deltalake (Python) can abort in its runtime's teardown at interpreter exit, after the reads
# succeeded: leave at once.
os._exit(1 if failures else 0)
