#!/usr/bin/env bash
# Makes sure a hot standby of the local server answers on 127.0.0.1:5433 (a second cluster,
# made with pg_basebackup and kept up to date by streaming replication) and exports the URL the
# replica tests use. Sourced by .ci/run after postgres-up.sh; can be run on its own:
# `bash scripts/postgres-replica-up.sh`. Needs root (it runs the cluster as the postgres user
# and lets 127.0.0.1 open replication connections with trust auth, as the test server does).
# `bash scripts/postgres-replica-up.sh stop` stops the standby (benchmarks run without it).

export ALLFRAME_TEST_REPLICA_URL="${ALLFRAME_TEST_REPLICA_URL:-postgres://postgres@127.0.0.1:5433/test}"
replica_port=5433
replica_dir=/var/lib/postgresql/allframe-replica

replica_up() { pg_isready -q -h 127.0.0.1 -p "$replica_port" 2>/dev/null; }
pg_bin() {
    local version
    version=$(psql -h 127.0.0.1 -U postgres -tAc "SHOW server_version_num" postgres 2>/dev/null | cut -c1-2)
    echo "/usr/lib/postgresql/${version:-15}/bin"
}

if [ "${1:-}" = "stop" ]; then
    if [ -d "$replica_dir" ]; then
        runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$replica_dir" stop -m fast >/dev/null 2>&1 || true
    fi
    echo "PostgreSQL replica: stopped"
    return 0 2>/dev/null || exit 0
fi

if ! replica_up; then
    echo "PostgreSQL replica: not answering, making a hot standby on port $replica_port"
    bin=$(pg_bin)
    hba=$(psql -h 127.0.0.1 -U postgres -tAc "SHOW hba_file" postgres)
    if [ -n "$hba" ] && ! grep -qE '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        echo "host replication all 127.0.0.1/32 trust" >> "$hba"
        psql -h 127.0.0.1 -U postgres -qtAc "SELECT pg_reload_conf()" postgres >/dev/null
    fi
    if [ -d "$replica_dir" ]; then
        runuser -u postgres -- "$bin/pg_ctl" -D "$replica_dir" stop -m immediate >/dev/null 2>&1 || true
        rm -rf "$replica_dir"
    fi
    install -d -o postgres -g postgres -m 700 "$replica_dir"
    if runuser -u postgres -- "$bin/pg_basebackup" -h 127.0.0.1 -p 5432 -U postgres -D "$replica_dir" -R -X stream -c fast; then
        # Debian keeps the configuration outside the data directory: give the standby its own.
        printf "port = %s\nhot_standby = on\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '/tmp'\nmax_connections = 100\nshared_buffers = 32MB\n" \
            "$replica_port" > "$replica_dir/postgresql.conf"
        printf "local all all trust\nhost all all 127.0.0.1/32 trust\n" > "$replica_dir/pg_hba.conf"
        chown postgres:postgres "$replica_dir/postgresql.conf" "$replica_dir/pg_hba.conf"
        runuser -u postgres -- "$bin/pg_ctl" -D "$replica_dir" -l "$replica_dir/server.log" -w start >/dev/null || true
    fi
fi
if replica_up; then
    echo "PostgreSQL replica: up at $ALLFRAME_TEST_REPLICA_URL"
else
    echo "PostgreSQL replica: not reachable; replica tests fail under CI=true and skip otherwise" >&2
fi
