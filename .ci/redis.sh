# A Redis server for the Redis destination's integration tests, on loopback, on a free port.
# Sourced by .ci/run (`source .ci/redis.sh`); works by hand from a shell too.
#
# - Installs Debian's redis-server (and redis-tools, for redis-benchmark) only when missing.
# - TIDEWAY_REDIS: `redis://127.0.0.1:PORT`, no password, no persistence (no RDB, no AOF),
#   its working folder a temporary one.
# Sourcing it again while TIDEWAY_REDIS answers does nothing. The server stops when the
# sourcing shell exits (an EXIT trap already set still runs first).

tideway_redis_answers() {
  [ -n "${TIDEWAY_REDIS:-}" ] && command -v redis-cli >/dev/null 2>&1 &&
    [ "$(redis-cli -u "${TIDEWAY_REDIS}" ping 2>/dev/null)" = "PONG" ]
}

if tideway_redis_answers; then
  echo "redis: already running: TIDEWAY_REDIS=${TIDEWAY_REDIS}"
else
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "redis: installing redis-server"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      redis-server redis-tools >/dev/null
  fi

  tideway_redis_dir="$(mktemp -d "${TMPDIR:-/tmp}/tideway-redis.XXXXXX")"
  tideway_redis_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --bind 127.0.0.1 --port "${tideway_redis_port}" --dir "${tideway_redis_dir}" \
    --save '' --appendonly no --daemonize no --protected-mode yes \
    --logfile "${tideway_redis_dir}/redis.log" &
  TIDEWAY_REDIS_PID=$!
  tideway_redis_up=""
  for _ in $(seq 1 100); do
    if [ "$(redis-cli -h 127.0.0.1 -p "${tideway_redis_port}" ping 2>/dev/null)" = "PONG" ]; then
      tideway_redis_up=1
      break
    fi
    kill -0 "${TIDEWAY_REDIS_PID}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "${tideway_redis_up}" ]; then
    echo "redis: redis-server did not answer on 127.0.0.1:${tideway_redis_port}; its log:" >&2
    cat "${tideway_redis_dir}/redis.log" >&2
    kill "${TIDEWAY_REDIS_PID}" 2>/dev/null || true
    return 1 2>/dev/null || exit 1
  fi
  export TIDEWAY_REDIS="redis://127.0.0.1:${tideway_redis_port}" TIDEWAY_REDIS_PID
  echo "redis: $(redis-server --version | cut -d' ' -f3): TIDEWAY_REDIS=${TIDEWAY_REDIS} (log in ${tideway_redis_dir})"

  tideway_redis_prev_trap="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
  # shellcheck disable=SC2064
  trap "${tideway_redis_prev_trap:+${tideway_redis_prev_trap};} kill ${TIDEWAY_REDIS_PID} 2>/dev/null || true" EXIT
  unset tideway_redis_port tideway_redis_up tideway_redis_prev_trap
fi
unset -f tideway_redis_answers
