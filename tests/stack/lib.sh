# Shared helpers for tests/stack/up and down. Sourced, not run.
STACK_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$STACK_SRC/../.." && pwd)
STACK_CACHE=${ASSETFS_STACK_CACHE:-$REPO_ROOT/.cache/stack-bin}
PY=/usr/bin/python3

die() { echo "stack: $*" >&2; exit 1; }
log() { echo "stack: $*" >&2; }

# free_port: asks the kernel for a free loopback port.
free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_until SECONDS CMD...: polls CMD with growing intervals, bounded in time.
wait_until() {
  local limit=$1; shift
  local start=$SECONDS delay=0.02
  local rc
  while true; do
    rc=0; "$@" >/dev/null 2>&1 || rc=$?
    [ $rc -eq 0 ] && return 0
    [ $rc -eq 2 ] && return 1
    if (( SECONDS - start >= limit )); then return 1; fi
    sleep "$delay"
    case $delay in 0.02) delay=0.05;; 0.05) delay=0.1;; 0.1) delay=0.2;; *) delay=0.5;; esac
  done
}

# alive_and PID CMD...: fails for good (exit 2 stops wait_until) once PID has exited.
alive_and() {
  local pid=$1; shift
  kill -0 "$pid" 2>/dev/null || return 2
  "$@"
}

# stop_pid PID NAME: SIGTERM (SIGINT, PostgreSQL's fast shutdown, for postgres),
# bounded wait, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 i sig=TERM
  [ "$name" = postgres ] && sig=INT
  kill -0 "$pid" 2>/dev/null || return 0
  kill -$sig "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  log "$name ($pid) ignored SIGTERM; killing"
  kill -KILL "$pid" 2>/dev/null || true
}

# pg_ready BIN PORT: pg_isready, with "no answer yet" (its exit 2) kept apart from
# wait_until's "give up" (also 2).
pg_ready() { "$1/pg_isready" -q -h 127.0.0.1 -p "$2" -t 1 || return 1; }

# start_postgres DIR: a private PostgreSQL cluster in DIR/pg for FerretDB, on a free
# loopback port with a random password, tuned for tests (no fsync). PostgreSQL refuses
# to run as root, so under root it runs as the "postgres" user Debian's package creates.
# Sets PG_URL and records the postmaster's PID in DIR/pids.
start_postgres() {
  local dir=$1 bin run=() pw port pid pg
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -x "$bin/initdb" ] || die "PostgreSQL is not installed (run tests/install-deps)"
  pg=$dir/pg
  mkdir -p "$pg"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user to run PostgreSQL as (run tests/install-deps)"
    run=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    chmod 711 "$dir"  # lets postgres reach DIR/pg; everything else in DIR stays 0700/0600
    chown postgres: "$pg"
    if ! "${run[@]}" test -w "$pg" 2>/dev/null; then
      # DIR is under a folder the postgres user cannot enter (e.g. /root): keep the
      # cluster in /tmp instead; down removes it.
      rmdir "$pg"
      pg=$(mktemp -d /tmp/assetfs-pg.XXXXXX)
      chown postgres: "$pg"
      echo "$pg" > "$dir/pg-elsewhere"
    fi
  fi
  # A cluster left by an earlier up/down of DIR has that stack's password: start afresh
  # (each up has new credentials, so nothing in it could be reached anyway).
  [ ! -d "$pg/data" ] || rm -rf "$pg/data"
  pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')
  (umask 077; echo "$pw" > "$pg/pwfile")
  [ ${#run[@]} -eq 0 ] || chown postgres: "$pg/pwfile"
  "${run[@]}" "$bin/initdb" -D "$pg/data" -U ferret --pwfile="$pg/pwfile" \
    -A scram-sha-256 -E UTF8 --locale=C --no-sync > "$dir/log/initdb.log" 2>&1 \
    || die "initdb failed (see $dir/log/initdb.log)"
  rm -f "$pg/pwfile"
  port=$(free_port)
  setsid "${run[@]}" "$bin/postgres" -D "$pg/data" -p "$port" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
    > "$dir/log/postgres.log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid postgres" >> "$dir/pids"
  wait_until 60 alive_and "$pid" pg_ready "$bin" "$port" \
    || { "$STACK_SRC/down" "$dir"; die "PostgreSQL exited or did not answer within 60 s (see $dir/log/postgres.log)"; }
  PG_URL="postgres://ferret:$pw@127.0.0.1:$port/postgres"
  index_ferretdb_tables "$bin" "$dir" "$port" "$pw"
}

# FerretDB 1.24 filters with `_jsonb -> 'field' @> value`, which its own btree indexes
# cannot serve: every find and update, even by _id, reads the collection's whole table
# (3.8-5.8 ms of CPU per command at 4,000 records, where MongoDB answers from the indexes
# the broker creates). An event trigger gives every table FerretDB creates a GIN index per
# field that assetfs filters on, so the test database costs about what an indexed MongoDB
# does (0.8 ms per command at 4,000 records).
index_ferretdb_tables() {
  local bin=$1 dir=$2 port=$3
  PGPASSWORD=$4 "$bin/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U ferret \
    -d postgres > "$dir/log/pg-index.log" 2>&1 <<'SQL' \
    || die "cannot add the index trigger (see $dir/log/pg-index.log)"
CREATE FUNCTION afs_gin_on_create() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record; f text;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE'
  LOOP
    IF r.schema_name <> 'public'
       AND r.object_identity NOT LIKE '%._ferretdb_database_metadata' THEN
      FOREACH f IN ARRAY ARRAY['_id', 'status', '_partition', 'filePath', 'sessionId', 'path']
      LOOP
        EXECUTE format('CREATE INDEX ON %s USING gin ((_jsonb -> %L))', r.object_identity, f);
      END LOOP;
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER afs_gin_on_create ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION afs_gin_on_create();
SQL
}
