#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 and exports the URL the tests use.
# Sourced by .ci/run; can be run on its own: `bash scripts/postgres-up.sh`.
# Starts the local Debian cluster when it is installed but down; installs it when missing.

export ALLFRAME_TEST_DATABASE_URL="${ALLFRAME_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 && ! ls /etc/postgresql >/dev/null 2>&1; then
    echo "PostgreSQL: not installed, installing Debian's package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
if ! pg_up; then
    echo "PostgreSQL: not answering, starting the local cluster"
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if pg_up; then
    # Trust auth for local TCP is the machine's setup; make sure the test database exists.
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" postgres | grep -q 1 \
        || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" postgres
    echo "PostgreSQL: up at $ALLFRAME_TEST_DATABASE_URL"
else
    echo "PostgreSQL: not reachable; PostgreSQL tests fail under CI=true and skip otherwise" >&2
fi
