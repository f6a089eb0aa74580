# PostgreSQL for the integration tests: throwaway clusters on loopback, on free ports.
# Sourced by .ci/run (`source .ci/postgres.sh`); works by hand from a shell too.
#
# - Uses the PostgreSQL binaries already on the machine (initdb on PATH, else
#   /usr/lib/postgresql/<newest>/bin); installs Debian's `postgresql` only when there are none.
# - postgres refuses to run as root: as root the clusters belong to the OS user `postgres`
#   (made with useradd if missing) and run through runuser; as anyone else, as that user.
# - Default settings (fsync on: durability is part of what the tests check), password
#   (scram-sha-256) logins over TCP on 127.0.0.1 only.
# - TIDEWAY_POSTGRES:           postgres://tideway:tideway-secret@127.0.0.1:PORT/tideway, which
#                               also takes TLS (when openssl is there to make a certificate);
# - TIDEWAY_POSTGRES_TLS_ROOT:  the CA certificate (PEM) of its certificate, for localhost;
# - TIDEWAY_POSTGRES_FAULT:     the same on a second server, which a test stops mid-load (the
#                               tests run at once, so the others must not see it go down);
# - TIDEWAY_POSTGRES_FAULT_CTL: a script taking `stop` (pg_ctl stop -m fast) or `start` for it.
# The servers stop, and their folder is removed, when the sourcing shell exits (an EXIT trap
# already set still runs first).

tideway_pg_bindir=""
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
  tideway_pg_bindir="$(dirname "$(readlink -f "$(command -v initdb)")")"
else
  tideway_pg_bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "${tideway_pg_bindir}" ] || [ ! -x "${tideway_pg_bindir}/initdb" ]; then
  echo "postgres: installing Debian's postgresql"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  tideway_pg_bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi

if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home postgres
  tideway_pg_as="runuser -u postgres --"
else
  tideway_pg_as=""
fi

tideway_pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/tideway-postgres.XXXXXX")"
chmod 755 "${tideway_pg_dir}"

# tideway_pg_start NAME [OPTIONS]: a cluster in $dir/NAME on a free port, started with the
# server OPTIONS (`-c name=value ...`), with the user and database `tideway`; sets
# tideway_pg_port. $dir/NAME/ctl stops and starts it with the same options.
tideway_pg_start() {
  local name="$1" options="${2:-}"
  local dir="${tideway_pg_dir}/${name}"
  mkdir -p "${dir}/data" "${dir}/socket"
  printf 'postgres-setup\n' >"${dir}/pwfile"
  [ -z "${tideway_pg_as}" ] || chown -R postgres:postgres "${dir}"
  tideway_pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  if ! ${tideway_pg_as} "${tideway_pg_bindir}/initdb" -D "${dir}/data" -U postgres \
    --pwfile="${dir}/pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C >"${dir}/initdb.log" 2>&1; then
    echo "postgres: initdb failed; its log:" >&2
    cat "${dir}/initdb.log" >&2
    return 1
  fi
  {
    echo '#!/usr/bin/env bash'
    echo "# stop | start the test server in ${dir}."
    echo 'set -e'
    echo 'case "$1" in'
    echo "  stop) ${tideway_pg_as} '${tideway_pg_bindir}/pg_ctl' -D '${dir}/data' -m fast -w stop >/dev/null ;;"
    echo "  start) ${tideway_pg_as} '${tideway_pg_bindir}/pg_ctl' -D '${dir}/data' -w -t 60 -l '${dir}/server.log' -o '-c listen_addresses=127.0.0.1 -p ${tideway_pg_port} -k ${dir}/socket ${options}' start >/dev/null ;;"
    echo '  *) echo "usage: $0 stop|start" >&2; exit 2 ;;'
    echo 'esac'
  } >"${dir}/ctl"
  chmod 755 "${dir}/ctl"
  if ! "${dir}/ctl" start; then
    echo "postgres: the server did not start on 127.0.0.1:${tideway_pg_port}; its log:" >&2
    cat "${dir}/server.log" >&2
    return 1
  fi
  if ! ${tideway_pg_as} "${tideway_pg_bindir}/psql" -q -h "${dir}/socket" -p "${tideway_pg_port}" \
    -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE tideway LOGIN PASSWORD 'tideway-secret'" \
    -c "CREATE DATABASE tideway OWNER tideway" >>"${dir}/setup.log" 2>&1; then
    echo "postgres: could not create the tideway user and database:" >&2
    cat "${dir}/setup.log" >&2
    "${dir}/ctl" stop || true
    return 1
  fi
}

# TLS on the first server: a throwaway CA and a certificate for localhost / 127.0.0.1.
tideway_pg_tls=""
if command -v openssl >/dev/null 2>&1; then
  mkdir -p "${tideway_pg_dir}/tls"
  (
    cd "${tideway_pg_dir}/tls" &&
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
        -subj "/CN=tideway test CA" -keyout ca.key -out ca.crt &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr &&
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext &&
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
        -extfile ext -out server.crt &&
      chmod 600 server.key
  ) >"${tideway_pg_dir}/tls.log" 2>&1 && {
    [ -z "${tideway_pg_as}" ] || chown -R postgres:postgres "${tideway_pg_dir}/tls"
    tideway_pg_tls="-c ssl=on -c ssl_cert_file=${tideway_pg_dir}/tls/server.crt -c ssl_key_file=${tideway_pg_dir}/tls/server.key"
  }
fi

tideway_pg_start plain "${tideway_pg_tls}" || { return 1 2>/dev/null || exit 1; }
export TIDEWAY_POSTGRES="postgres://tideway:tideway-secret@127.0.0.1:${tideway_pg_port}/tideway"
if [ -n "${tideway_pg_tls}" ]; then
  export TIDEWAY_POSTGRES_TLS_ROOT="${tideway_pg_dir}/tls/ca.crt"
fi
tideway_pg_start fault || {
  "${tideway_pg_dir}/plain/ctl" stop || true
  return 1 2>/dev/null || exit 1
}
export TIDEWAY_POSTGRES_FAULT="postgres://tideway:tideway-secret@127.0.0.1:${tideway_pg_port}/tideway"
export TIDEWAY_POSTGRES_FAULT_CTL="${tideway_pg_dir}/fault/ctl"
TIDEWAY_POSTGRES_DIR="${tideway_pg_dir}"
export TIDEWAY_POSTGRES_DIR

echo "postgres: $("${tideway_pg_bindir}/postgres" --version) on 127.0.0.1: TIDEWAY_POSTGRES=...@${TIDEWAY_POSTGRES##*@} TIDEWAY_POSTGRES_FAULT=...@${TIDEWAY_POSTGRES_FAULT##*@} (logs in ${tideway_pg_dir})"

tideway_pg_prev_trap="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
# shellcheck disable=SC2064
trap "${tideway_pg_prev_trap:+${tideway_pg_prev_trap};} ${tideway_pg_dir}/plain/ctl stop 2>/dev/null || true; ${tideway_pg_dir}/fault/ctl stop 2>/dev/null || true; rm -rf ${tideway_pg_dir}" EXIT
unset tideway_pg_bindir tideway_pg_as tideway_pg_dir tideway_pg_port tideway_pg_prev_trap tideway_pg_tls
unset -f tideway_pg_start
