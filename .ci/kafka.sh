# Kafka-protocol brokers for the integration tests: tansu, on loopback, on free ports.
# Sourced by .ci/run (`source .ci/kafka.sh`); works by hand from a shell too.
#
# - Installs tansu only when missing (about 15 minutes of one core's build).
# - TIDEWAY_KAFKA:      a plain broker.
# - TIDEWAY_KAFKA_SASL: a broker that requires SASL/SCRAM-SHA-512, user `tideway`, password
#                       `tideway-secret`.
# Both store in SQLite files in a temporary folder, not in `memory://`: tansu 0.6.0's memory
# (object-store) engine answers ListOffsets(latest) with the last batch's *base* offset + 1 and
# serves a fetch from inside a batch starting at the next batch, which a reader that resumes from
# stored positions or reads to the high watermark cannot work with.
# The brokers stop when the sourcing shell exits (an EXIT trap already set still runs first).

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"

if ! command -v tansu >/dev/null 2>&1; then
  echo "kafka: installing tansu ${TANSU_VERSION}"
  cargo install tansu --version "${TANSU_VERSION}" --locked --features dynostore,libsql \
    --target-dir "${TANSU_TARGET_DIR:-$HOME/.cache/tansu-target}"
fi

tideway_kafka_dir="$(mktemp -d "${TMPDIR:-/tmp}/tideway-kafka.XXXXXX")"

# tideway_kafka_start NAME PORT [ARGS...]: starts a broker storing in $dir/NAME.db, waits for it.
tideway_kafka_start() {
  local name="$1" port="$2"
  shift 2
  # tansu reads `sqlite://` paths relative to its working folder.
  (cd "${tideway_kafka_dir}" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:${port}" \
    --advertised-listener-url "tcp://127.0.0.1:${port}" \
    --storage-engine "sqlite://${name}.db" "$@" \
    >>"${tideway_kafka_dir}/${name}.log" 2>&1) &
  tideway_kafka_pid=$!
  local _
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      return 0
    fi
    kill -0 "${tideway_kafka_pid}" 2>/dev/null || break
    sleep 0.1
  done
  echo "kafka: tansu did not accept connections on 127.0.0.1:${port}; its log:" >&2
  cat "${tideway_kafka_dir}/${name}.log" >&2
  kill "${tideway_kafka_pid}" 2>/dev/null || true
  return 1
}

tideway_kafka_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tideway_kafka_port="$(tideway_kafka_free_port)"
tideway_kafka_start plain "${tideway_kafka_port}" || { return 1 2>/dev/null || exit 1; }
TIDEWAY_KAFKA_PID="${tideway_kafka_pid}"
export TIDEWAY_KAFKA="127.0.0.1:${tideway_kafka_port}"

# The SASL broker: the user is made through a broker without authentication on the same store
# (`tansu user create` cannot log in yet), which is then restarted with --authentication.
tideway_kafka_port="$(tideway_kafka_free_port)"
tideway_kafka_start sasl "${tideway_kafka_port}" || { return 1 2>/dev/null || exit 1; }
tansu user create --broker "tcp://127.0.0.1:${tideway_kafka_port}" tideway tideway-secret \
  >>"${tideway_kafka_dir}/sasl.log" 2>&1
kill "${tideway_kafka_pid}"
wait "${tideway_kafka_pid}" 2>/dev/null || true
tideway_kafka_start sasl "${tideway_kafka_port}" --authentication || { return 1 2>/dev/null || exit 1; }
TIDEWAY_KAFKA_SASL_PID="${tideway_kafka_pid}"
export TIDEWAY_KAFKA_SASL="127.0.0.1:${tideway_kafka_port}"
export TIDEWAY_KAFKA_PID TIDEWAY_KAFKA_SASL_PID

echo "kafka: tansu ${TANSU_VERSION}: TIDEWAY_KAFKA=${TIDEWAY_KAFKA} TIDEWAY_KAFKA_SASL=${TIDEWAY_KAFKA_SASL} (logs in ${tideway_kafka_dir})"

tideway_kafka_prev_trap="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
# SIGKILL: a tansu 0.6.0 broker was seen outliving SIGTERM; its SQLite store is throwaway.
# shellcheck disable=SC2064
trap "${tideway_kafka_prev_trap:+${tideway_kafka_prev_trap};} kill -9 ${TIDEWAY_KAFKA_PID} ${TIDEWAY_KAFKA_SASL_PID} 2>/dev/null || true" EXIT
unset tideway_kafka_port tideway_kafka_pid tideway_kafka_prev_trap
