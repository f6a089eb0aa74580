#!/usr/bin/env bash
# Models benchmark (issue #5): a generated layered DAG of N models (../shared/bench/peers/gen_dag.py,
# the same files for every tool), cold compile by Tideway next to `dbt parse` (no type checks)
# and SQLMesh's load, in the same run, each timed by the shared peers/bench.py (wall, peak RSS).
#   bench/models_vs_dbt.sh [RUNS=3] [SIZES="1000 10000"] [PEERS=all|none]
# Needs: ../shared/bench/.venv, and target/release/tideway (or $TIDEWAY).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TIDEWAY="${TIDEWAY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tideway}"
RUNS="${1:-3}"; SIZES="${2:-1000 10000}"; PEERS="${3:-all}"
source "$ROOT/../shared/bench/peers/_common.sh"   # cd's into the lab
export DBT_SEND_ANONYMOUS_USAGE_STATS=false DO_NOT_TRACK=1
"$PY" peers/bench.py --name "tideway_startup" --runs "$RUNS" -- "$TIDEWAY" --version
for N in $SIZES; do
  LAYERS=20; [ "$N" -ge 10000 ] && LAYERS=40
  D="out/dag$N"
  "$PY" peers/gen_dag.py --models "$N" --layers "$LAYERS" --out "$D" | tee "out/results/dag${N}_shape.txt"
  # The dbt project, unchanged, is also a Tideway project: ref() finds models by file name.
  printf '[project]\nname = "dag%s"\n' "$N" > "$D/dbt/tideway.toml"
  "$PY" peers/bench.py --name "dag${N}_tideway_compile_cold" --runs "$RUNS" -- \
      "$TIDEWAY" -p "$D/dbt" compile
  [ "$PEERS" = none ] && continue
  export DBT_TARGET_PATH="$LAB/$D/dbt/target" DBT_LOG_PATH="$LAB/$D/dbt/logs"
  export DBT_DUCKDB_PATH="$LAB/$D/dbt_dag.duckdb"
  "$PY" peers/bench.py --name "dag${N}_dbt_parse_cold" --runs "$RUNS" --setup "rm -rf $DBT_TARGET_PATH" -- \
      dbt parse --no-partial-parse --project-dir "$D/dbt" --profiles-dir "$D/dbt"
  "$PY" peers/bench.py --name "dag${N}_sqlmesh_load_cold" --runs "$RUNS" --setup "rm -rf $D/sqlmesh/.cache" -- \
      "$PY" peers/sqlmesh_tasks.py load "$D/sqlmesh"
done
for f in out/results/tideway_startup.json out/results/dag*_{tideway,dbt,sqlmesh}_*.json; do
  [ -f "$f" ] && "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); m=d.get('median',d); print(f\"{sys.argv[1].split('/')[-1][:-5]:40s} wall {m.get('wall_s')} s  rss {m.get('max_rss_kb',0)//1024} MB\")" "$f"
done
