#!/usr/bin/env bash
# Customer-health pipeline (issue #5): the demo's models (the Datacoral customer_health example
# and the lead score, the same SQL as ../shared/bench/peers/dbt_health) on the shared
# warehouse/ Parquet tables, run by Tideway next to dbt-duckdb in the same session.
#   bench/health_vs_dbt.sh [SIZE=medium] [RUNS=3]
# Needs: ../shared/bench/.venv, ../shared/bench/data/SIZE (gen.py --size SIZE), and
# target/release/tideway (or $TIDEWAY).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TIDEWAY="${TIDEWAY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tideway}"
SIZE="${1:-medium}"; RUNS="${2:-3}"
source "$ROOT/../shared/bench/peers/_common.sh"   # cd's into the lab
WAREHOUSE="$LAB/data/$SIZE/warehouse"
P="$LAB/out/tideway_health_$SIZE"
rm -rf "$P"; mkdir -p "$P/models"
printf '[project]\nname = "health_%s"\n' "$SIZE" > "$P/tideway.toml"
# The demo's models, less the daily_activity model the peer does not have.
cp -r "$ROOT/crates/tideway/src/demo_models/staging" "$ROOT/crates/tideway/src/demo_models/marts" "$P/models/"
rm -f "$P/models/marts/daily_activity.sql"
# The warehouse tables into the lake, once (dbt reads the Parquet files on every run).
IMPORT="$P/import.sh"; : > "$IMPORT"
# billingdb/*.parquet and zendesk/*.parquet by folder; webevents and deviceevents into events.
for f in "$WAREHOUSE"/billingdb/*.parquet "$WAREHOUSE"/zendesk/*.parquet "$WAREHOUSE"/*events.parquet; do
  schema="$(basename "$(dirname "$f")")"; [ "$schema" = warehouse ] && schema=events
  table="$(basename "$f" .parquet)"
  echo "\"$TIDEWAY\" -p \"$P\" lake import \"$f\" --table $schema.$table > /dev/null" >> "$IMPORT"
done
"$PY" peers/bench.py --name "tideway_health_import_$SIZE" --runs 1 -- bash "$IMPORT"
# Each run builds every table from scratch (--full-refresh) and runs the models' data tests.
"$PY" peers/bench.py --name "tideway_health_run_$SIZE" --runs "$RUNS" -- \
    "$TIDEWAY" -p "$P" run --full-refresh
"$TIDEWAY" -p "$P" sql "SELECT health_bucket, count(*) FROM marts.customer_health GROUP BY 1 ORDER BY 1" \
    | tee "out/results/tideway_health_buckets_$SIZE.txt"
bash peers/run_dbt_health.sh "$SIZE" "$RUNS"
for f in out/results/tideway_health_{import,run}_"$SIZE".json out/results/dbt_health_run_"$SIZE".json; do
  [ -f "$f" ] && "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); m=d.get('median',d); print(f\"{sys.argv[1].split('/')[-1][:-5]:36s} wall {m.get('wall_s')} s  rss {m.get('max_rss_kb',0)//1024} MB\")" "$f"
done
