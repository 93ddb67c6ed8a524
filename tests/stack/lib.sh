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

# stop_pid PID NAME: SIGTERM, bounded wait, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  log "$name ($pid) ignored SIGTERM; killing"
  kill -KILL "$pid" 2>/dev/null || true
}
