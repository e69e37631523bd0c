#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the tests (Debian's package), as the unprivileged
# "postgres" user, on a private Unix socket only (no TCP port). Prints the SQLAlchemy URL.
# Usage: url=$(bash .ci/postgres.sh DIR)   (stop it with: pg_ctl -D DIR/data stop, as postgres)
set -euo pipefail
dir=${1:?usage: postgres.sh DIR}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "postgres.sh: PostgreSQL is not installed and this is not root" >&2; exit 1; fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
mkdir -p "$dir/data" "$dir/sock"
chown -R postgres "$dir"
chmod 700 "$dir/sock"
run() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
run "'$bin/initdb' -D '$dir/data' --auth=trust -U postgres -E UTF8 >/dev/null"
run "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w -o \"-k '$dir/sock' -c listen_addresses='' -c fsync=off\" start >/dev/null"
run "'$bin/createdb' -h '$dir/sock' -U postgres elmsearch_test"
echo "postgresql+psycopg://postgres@/elmsearch_test?host=$dir/sock"
