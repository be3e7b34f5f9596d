#!/usr/bin/env bash
# Stops what scripts/testbed/start.sh (and scripts/dev-up) started, by pid (same
# FTP_POOLER_DEV_RUN): the service first (SIGTERM; it drains, up to 45 s), then the servers.
set -euo pipefail
source "$(dirname "$0")/env.sh"
piddir="${FTP_POOLER_DEV_RUN:-$TESTBED_RUN/dev}"
for f in "$piddir"/ftp-pooler.pid "$piddir"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    wait=50; [ "$(basename "$f")" = ftp-pooler.pid ] && wait=450
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $wait); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        log "stopped $(basename "$f" .pid) (pid $pid)"
    fi
    rm -f "$f"
done
