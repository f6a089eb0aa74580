#!/usr/bin/env bash
# Identity stitching (issue #7): the shared identity-graph workload (peers/identity_graph.py:
# ~1.6 edges per id, clusters of 1-200 ids), Tideway's `unify` next to the SQL connected-
# components peer (DuckDB, iterative min-label propagation) in the same session.
#   bench/unify_vs_duckdb.sh [IDS=1000000] [NEW_EDGES=100000]
# Full stitch: every edge but the last NEW_EDGES, from an empty graph. Incremental: the last
# NEW_EDGES appended, then a second run. Each tideway run is a fresh process timed by
# peers/bench.py (wall, peak RSS). The result is checked against the generator's truth.
# Needs: python with duckdb, numpy and pyarrow ($PY), and target/release/tideway ($TIDEWAY).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TIDEWAY="${TIDEWAY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tideway}"
IDS="${1:-1000000}"; NEW="${2:-100000}"
LAB="$ROOT/../shared/bench"
PY="${PY:-$LAB/.venv/bin/python}"
cd "$LAB"
D="data/identity/$IDS"
[ -f "$D/edges.parquet" ] || "$PY" peers/identity_graph.py gen --ids "$IDS"
"$PY" - "$D" "$NEW" <<'PY'
import sys, pyarrow.parquet as pq
d, new = sys.argv[1], int(sys.argv[2])
t = pq.read_table(f"{d}/edges.parquet")
pq.write_table(t.slice(0, t.num_rows - new), f"{d}/edges_base.parquet")
pq.write_table(t.slice(t.num_rows - new), f"{d}/edges_new.parquet")
print(f"{t.num_rows - new} base edges, {new} new edges")
PY
P="$(mktemp -d)"
trap 'rm -rf "$P"' EXIT
cat > "$P/tideway.toml" <<TOML
[project]
name = "unify-bench"
[unify]
defaults = false
max_merges = 1000000
[unify.types.user_id]
limit = false
[unify.types.email]
limit = false
normalize = "trim"   # the generated e-mails are opaque ids
[unify.types.phone]
limit = false
[[unify.sources]]
table = "bench.identity_edges"
typed = [["id_type_a", "id_a"], ["id_type_b", "id_b"]]
time = "ts"
TOML
"$TIDEWAY" -p "$P" lake import "$D/edges_base.parquet" -t bench.identity_edges >/dev/null
"$TIDEWAY" -p "$P" lake import "$D/truth.parquet" -t bench.truth >/dev/null
echo "== tideway unify: full stitch of $IDS ids"
"$PY" peers/bench.py --name "tideway_unify_full_$IDS" --runs 1 -- "$TIDEWAY" -p "$P" unify
"$TIDEWAY" -p "$P" lake import "$D/edges_new.parquet" -t bench.identity_edges >/dev/null
echo "== tideway unify: $NEW new edges into that graph"
"$PY" peers/bench.py --name "tideway_unify_incremental_$IDS" --runs 1 -- "$TIDEWAY" -p "$P" unify
echo "== check against the truth (clusters split or joined; 0 is exact)"
"$TIDEWAY" -p "$P" sql "SELECT count(*) AS mismatched_clusters FROM (
  SELECT t.cluster AS c FROM bench.truth t JOIN profiles.identity_map m ON m.id_type = t.id_type AND m.id_value = t.id
    GROUP BY t.cluster HAVING count(DISTINCT m.profile_id) > 1
  UNION ALL
  SELECT m.profile_id FROM bench.truth t JOIN profiles.identity_map m ON m.id_type = t.id_type AND m.id_value = t.id
    GROUP BY m.profile_id HAVING count(DISTINCT t.cluster) > 1)"
"$TIDEWAY" -p "$P" sql "SELECT (SELECT count(*) FROM profiles.identity_map) AS ids, (SELECT count(*) FROM profiles.profiles) AS profiles"
echo "== duckdb label propagation (the peer), same graph"
"$PY" peers/identity_graph.py duckdb --ids "$IDS"
