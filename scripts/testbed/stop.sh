#!/usr/bin/env bash
# Stops what scripts/testbed/start.sh started, by pid (same FTP_POOLER_DEV_RUN).
set -euo pipefail
source "$(dirname "$0")/env.sh"
piddir="${FTP_POOLER_DEV_RUN:-$TESTBED_RUN/dev}"
for f in "$piddir"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        log "stopped $(basename "$f" .pid) (pid $pid)"
    fi
    rm -f "$f"
done
