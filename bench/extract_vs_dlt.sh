#!/usr/bin/env bash
# Extract benchmark (issue #4): Tideway and dlt pull the same mock Kustomer API (customers and
# conversations) into Delta Lake, full (day 1) then incremental (day 2), in the same run, each
# timed by the shared peers/bench.py (wall time, peak RSS).
#   bench/extract_vs_dlt.sh [SIZE=small] [RUNS=3]
# Needs: ../shared/bench set up (.venv, data/SIZE), and target/release/tideway (or $TIDEWAY).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TIDEWAY="${TIDEWAY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tideway}"
SIZE="${1:-small}"; RUNS="${2:-3}"
source "$ROOT/../shared/bench/peers/_common.sh"   # cd's into the lab; start_mock / stop_mock
W="$LAB/out/tideway_extract"
mkdir -p "$W"
project() {  # a Tideway project reading the mock
  rm -rf "$1" && mkdir -p "$1/sources"
  printf '[project]\nname = "bench"\n' > "$1/tideway.toml"
  cat > "$1/sources/kustomer.toml" <<TOML
type = "kustomer"
api_key = "\${KUSTOMER_API_KEY}"
base_url = "http://127.0.0.1:$MOCK_PORT/v1/"
requests_per_minute = 1000000
resources = ["customers", "conversations"]
TOML
}
export KUSTOMER_API_KEY=lab-token

start_mock "$SIZE" 1
"$PY" peers/bench.py --name "mock_fetch_${SIZE}" --runs 1 -- "$PY" peers/mock_fetch_speed.py --filter --passes 1
"$PY" peers/bench.py --name "tideway_extract_day1_${SIZE}" --runs "$RUNS" \
    --setup "rm -rf $W/p_$SIZE && mkdir -p $W && true" -- \
    bash -c "$(declare -f project); MOCK_PORT=$MOCK_PORT project $W/p_$SIZE && $TIDEWAY -p $W/p_$SIZE extract"
rm -rf "$W/p_${SIZE}_day1"; cp -r "$W/p_$SIZE" "$W/p_${SIZE}_day1"
"$PY" peers/bench.py --name "dlt_delta_day1_${SIZE}" --runs "$RUNS" \
    --setup "rm -rf out/dlt/delta_${SIZE}" -- \
    "$PY" peers/dlt_kustomer.py --dest delta --workdir "out/dlt/delta_${SIZE}"
rm -rf "out/dlt/delta_${SIZE}_day1"; cp -r "out/dlt/delta_${SIZE}" "out/dlt/delta_${SIZE}_day1"
stop_mock

start_mock "$SIZE" 2
"$PY" peers/bench.py --name "tideway_extract_day2incr_${SIZE}" --runs "$RUNS" \
    --setup "rm -rf $W/p_$SIZE && cp -r $W/p_${SIZE}_day1 $W/p_$SIZE" -- \
    "$TIDEWAY" -p "$W/p_$SIZE" extract
"$PY" peers/bench.py --name "dlt_delta_day2incr_${SIZE}" --runs "$RUNS" \
    --setup "rm -rf out/dlt/delta_${SIZE} && cp -r out/dlt/delta_${SIZE}_day1 out/dlt/delta_${SIZE}" -- \
    "$PY" peers/dlt_kustomer.py --dest delta --workdir "out/dlt/delta_${SIZE}"
stop_mock
"$TIDEWAY" -p "$W/p_$SIZE" sql "SELECT count(*) AS customers, count(DISTINCT id) AS ids FROM kustomer.customers"
"$TIDEWAY" -p "$W/p_$SIZE" tables
for n in mock_fetch tideway_extract_day1 dlt_delta_day1 tideway_extract_day2incr dlt_delta_day2incr; do
  "$PY" -c "import json,sys; d=json.load(open('out/results/${n}_${SIZE}.json')); m=d.get('median',d.get('medians',{})); print('${n}', json.dumps(m))"
done
