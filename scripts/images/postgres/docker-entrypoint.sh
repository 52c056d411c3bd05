#!/bin/sh
# Entrypoint of stand/postgres:15 (busybox sh). Mirrors the official postgres image for
# what stand uses: on first start with an empty $PGDATA it runs initdb with
# POSTGRES_USER/POSTGRES_PASSWORD, creates POSTGRES_DB, runs /docker-entrypoint-initdb.d/*.sql|*.sh,
# listens on all addresses with password auth (scram-sha-256), and runs the server as the
# non-root postgres user (uid 999, via util-linux setpriv: busybox ash would run its own
# setpriv applet, which cannot change uids, for a bare name) as PID 1, so SIGTERM/SIGINT shut it down cleanly.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

# `docker run IMAGE -c foo=bar` means postgres flags.
if [ "${1#-}" != "${1:-}" ]; then set -- postgres "$@"; fi

if [ "${1:-}" = postgres ]; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chown postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    chmod 2777 /run/postgresql
    exec /usr/bin/setpriv --reuid=999 --regid=999 --clear-groups "$0" "$@"
  fi

  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}"
    : "${POSTGRES_DB:=$POSTGRES_USER}"
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
      echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
      echo "       (set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)" >&2
      exit 1
    fi
    mkdir -p "$PGDATA"; chmod 700 "$PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\njit = off\n" >>"$PGDATA/postgresql.conf"

    # Temporary server on the unix socket only, to create the database and run init scripts.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 -l /tmp/init-server.log start >/dev/null
    psql_() { psql -X -v ON_ERROR_STOP=1 --no-password --username "$POSTGRES_USER" "$@"; }
    if [ "$POSTGRES_DB" != postgres ]; then
      psql_ --dbname postgres --set db="$POSTGRES_DB" -q <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
      # shellcheck disable=SC1090
      case $f in
        *.sql) echo "running $f"; psql_ --dbname "$POSTGRES_DB" -q -f "$f" ;;
        *.sh) echo "running $f"; . "$f" ;;
        *) ;;
      esac
    done
    pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
  fi
fi

exec "$@"
