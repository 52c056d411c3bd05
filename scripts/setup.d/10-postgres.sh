#!/usr/bin/env bash
# PostgreSQL 15 (Debian) cluster 15/main on 127.0.0.1:5432, superuser role stand/stand.
# No systemd on these machines: the cluster is started with pg_ctlcluster.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

PG_VER=15 PG_CLUSTER=main PG_PORT=5432
URL="postgres://stand:stand@127.0.0.1:${PG_PORT}/postgres"

# Debian 12 ships PostgreSQL 15; other releases (Ubuntu 24.04 on GitHub's runners) get it
# from the PostgreSQL project's apt repository, its signing key checked by fingerprint.
PGDG_FPR=B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8
PGDG_KEY=/usr/share/keyrings/stand-pgdg.asc
pg_candidate() { apt-cache policy "postgresql-$PG_VER" 2>/dev/null | grep -Eq 'Candidate: [0-9]'; }
if [[ -n $(apt_missing "postgresql-$PG_VER") ]] && ! pg_candidate; then
  apt_install ca-certificates curl gnupg
  # postgresql-common from that repository ships the key; else fetch it.
  src=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc
  if [[ -f $src ]]; then cp "$src" "$PGDG_KEY.new"
  else curl -fsSL --retry 3 -o "$PGDG_KEY.new" https://www.postgresql.org/media/keys/ACCC4CF8.asc || die "cannot fetch the PGDG key"
  fi
  gpg --show-keys --with-colons "$PGDG_KEY.new" 2>/dev/null | awk -F: '$1 == "fpr" {print $10}' | grep -qx "$PGDG_FPR" \
    || { rm -f "$PGDG_KEY.new"; die "the PGDG key is not $PGDG_FPR"; }
  mv -f "$PGDG_KEY.new" "$PGDG_KEY"
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  log "adding apt.postgresql.org ($codename-pgdg) for postgresql-$PG_VER"
  echo "deb [signed-by=$PGDG_KEY] https://apt.postgresql.org/pub/repos/apt $codename-pgdg main" \
    >/etc/apt/sources.list.d/stand-pgdg.list
  rm -f "$STAND_STATE_DIR/apt-updated"   # the next apt_install updates the lists
fi
apt_install postgresql-common "postgresql-$PG_VER" "postgresql-client-$PG_VER"
[[ -x /usr/lib/postgresql/$PG_VER/bin/postgres ]] || die "PostgreSQL $PG_VER binaries missing"

# Cluster: create it if the package's postinst did not (or it was dropped).
if ! pg_lsclusters -h | awk -v v="$PG_VER" -v c="$PG_CLUSTER" '$1==v && $2==c {f=1} END {exit !f}'; then
  log "creating cluster $PG_VER/$PG_CLUSTER"
  pg_createcluster --port "$PG_PORT" "$PG_VER" "$PG_CLUSTER" >/dev/null
fi
conf_changed=0
if [[ $(pg_conftool -s "$PG_VER" "$PG_CLUSTER" show port 2>/dev/null) != "$PG_PORT" ]]; then
  log "setting port $PG_PORT"; pg_conftool "$PG_VER" "$PG_CLUSTER" set port "$PG_PORT"; conf_changed=1
fi
# Debian's default listen_addresses ('localhost', commented out) covers 127.0.0.1; only
# fix an explicit setting that would not.
la=$(pg_conftool -s "$PG_VER" "$PG_CLUSTER" show listen_addresses 2>/dev/null || true)
if [[ -n $la && $la != *localhost* && $la != *127.0.0.1* && $la != '*' ]]; then
  log "setting listen_addresses"; pg_conftool "$PG_VER" "$PG_CLUSTER" set listen_addresses localhost; conf_changed=1
fi
# Password (scram/md5) auth for TCP from 127.0.0.1 (Debian's default pg_hba has it).
hba=/etc/postgresql/$PG_VER/$PG_CLUSTER/pg_hba.conf
if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+(scram-sha-256|md5)' "$hba"; then
  log "adding 127.0.0.1 scram-sha-256 rule to pg_hba.conf"
  sed -i '1i host all all 127.0.0.1/32 scram-sha-256' "$hba"; conf_changed=1
fi

status=$(pg_lsclusters -h | awk -v v="$PG_VER" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}')
if [[ $status != online ]]; then
  log "starting cluster $PG_VER/$PG_CLUSTER"
  pg_ctlcluster "$PG_VER" "$PG_CLUSTER" start || die "pg_ctlcluster start failed (see /var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log)"
elif (( conf_changed )); then
  log "restarting cluster to apply config"; pg_ctlcluster "$PG_VER" "$PG_CLUSTER" restart
fi
wait_until 60 "pg_isready on 127.0.0.1:$PG_PORT" pg_isready -q -h 127.0.0.1 -p "$PG_PORT" \
  || die "PostgreSQL not ready (see /var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log)"

# Role stand/stand SUPERUSER LOGIN; only touched when logging in as it does not already work.
is_super() { [[ $(psql "$URL" -XtAc 'select rolsuper from pg_roles where rolname = current_user' 2>/dev/null) == t ]]; }
if ! is_super; then
  log "creating/updating role stand"
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'stand') THEN
    ALTER ROLE stand WITH SUPERUSER LOGIN PASSWORD 'stand';
  ELSE
    CREATE ROLE stand WITH SUPERUSER LOGIN PASSWORD 'stand';
  END IF;
END $$;
SQL
  is_super || die "cannot log in as superuser stand at 127.0.0.1:$PG_PORT"
fi
psql "$URL" -XtAc 'select version()' | sed 's/^/  /' >&2
