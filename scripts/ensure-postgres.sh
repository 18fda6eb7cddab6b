#!/usr/bin/env bash
# Makes sure a PostgreSQL server accepts connections on 127.0.0.1:5432 with
# trust auth for user `postgres` (what the tests use by default). Starts the
# Debian cluster if it is installed but down; installs it from Debian's
# packages if it is missing (needs root). Other setups: export
# ACCRUE_TEST_DATABASE_URL=postgres://user:pass@host:port/postgres instead.
set -euo pipefail

ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if [ -n "${ACCRUE_TEST_DATABASE_URL:-}" ]; then
  echo "using ACCRUE_TEST_DATABASE_URL"; exit 0
fi
if command -v pg_isready >/dev/null && ready; then
  echo "PostgreSQL is up"; exit 0
fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "PostgreSQL not installed: installing from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  version=$(ls /etc/postgresql | head -n1)
  conf=/etc/postgresql/$version/main/pg_hba.conf
  # Local test server only: trust loopback connections.
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$conf"
fi
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
for _ in $(seq 1 30); do
  if ready; then echo "PostgreSQL is up"; exit 0; fi
  sleep 1
done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
