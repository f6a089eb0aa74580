#!/usr/bin/env bash
# Reverse-ETL diff (issue #8): the shared traits tables (day 2 against day 1: 1% changed, 0.5%
# new), Tideway's differ (tideway bench sync-diff) next to DuckDB's EXCEPT over the Parquet files
# (bench/duckdb_except_files.py) and, on tables loaded into memory first, its EXCEPT, hash join
# and stored-hash snapshot (peers/duckdb_diff.py), in the same session.
#   bench/sync_vs_duckdb.sh [SIZE=small] [RUNS=3]
# Needs: python with duckdb and pyarrow ($PY, default ../shared/bench/.venv/bin/python),
# ../shared/bench/data/SIZE/warehouse (gen.py --size SIZE --parts warehouse), and
# target/release/tideway (or $TIDEWAY).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TIDEWAY="${TIDEWAY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tideway}"
SIZE="${1:-small}"; RUNS="${2:-3}"
LAB="$ROOT/../shared/bench"
PY="${PY:-$LAB/.venv/bin/python}"
cd "$LAB"
echo "== tideway"
/usr/bin/time -f "   wall %e s, peak RSS %M KB (whole process: import, state, $RUNS diffs)" \
  "$TIDEWAY" bench sync-diff --data "data/$SIZE" --runs "$RUNS"
echo "== duckdb except over the Parquet files"
"$PY" "$ROOT/bench/duckdb_except_files.py" "data/$SIZE/warehouse/traits"
for m in except hashjoin snapshot; do
  echo "== duckdb $m"
  "$PY" peers/duckdb_diff.py --size "$SIZE" --method "$m"
done
