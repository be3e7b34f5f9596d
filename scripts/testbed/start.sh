#!/usr/bin/env bash
# Starts the local dev stack on 127.0.0.1, each server in the background with a pid file
# under $FTP_POOLER_TESTBED/run/dev, waits until each is ready, and creates the topics.
#   broker      Tansu on $DEV_KAFKA_PORT (19092), topics ftp-tasks (3 partitions),
#               ftp-results, ftp-failures, ftp-tasks-dlq
#   vsftpd      plain on $DEV_VSFTPD_PORT (2121), explicit FTPS on $DEV_VSFTPD_TLS_PORT (2990)
#   pyftpdlib   plain on $DEV_PYFTPD_PORT (2122)
# Pid files, logs and FTP roots ({vsftpd,vsftpd-tls,pyftpdlib}) are under
# $FTP_POOLER_DEV_RUN (default $FTP_POOLER_TESTBED/run/dev); so are the passive port
# ranges' base, $DEV_PASV_BASE (40000).
# Prints the environment a client needs. Stop everything with scripts/testbed/stop.sh.
# A broker given in FTP_POOLER_TEST_BOOTSTRAP is used instead of starting Tansu.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

DEV_KAFKA_PORT="${DEV_KAFKA_PORT:-19092}"
DEV_VSFTPD_PORT="${DEV_VSFTPD_PORT:-2121}"
DEV_VSFTPD_TLS_PORT="${DEV_VSFTPD_TLS_PORT:-2990}"
DEV_PYFTPD_PORT="${DEV_PYFTPD_PORT:-2122}"
pasv="${DEV_PASV_BASE:-40000}"
piddir="${FTP_POOLER_DEV_RUN:-$TESTBED_RUN/dev}"
ftproot="$piddir/ftp"
mkdir -p "$piddir" "$ftproot"

running() { [ -f "$piddir/$1.pid" ] && kill -0 "$(cat "$piddir/$1.pid")" 2>/dev/null; }

# start NAME ARGS...: runs `serve ARGS...` in the background unless NAME runs already.
start() {
    local name="$1"; shift
    if running "$name"; then log "$name already running (pid $(cat "$piddir/$name.pid"))"; return; fi
    setsid "$here/serve" "$@" >"$piddir/$name.log" 2>&1 < /dev/null &
    echo $! > "$piddir/$name.pid"
}

wait_port() { # NAME PORT [greeting]
    local name="$1" port="$2" greet="${3:-}" i line
    for i in $(seq 1 400); do
        running "$name" || die "$name exited: $(tail -5 "$piddir/$name.log")"
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            if [ -z "$greet" ]; then exec 3>&-; return 0; fi
            if read -r -t 2 line <&3 && [[ "$line" == 220* ]]; then exec 3>&-; return 0; fi
            exec 3>&-
        fi
        sleep 0.05
    done
    die "$name not ready on port $port: $(tail -5 "$piddir/$name.log")"
}

if [ -n "${FTP_POOLER_TEST_BOOTSTRAP:-}" ]; then
    bootstrap="$FTP_POOLER_TEST_BOOTSTRAP"
    log "using the external broker $bootstrap (create the topics yourself)"
else
    bootstrap="127.0.0.1:$DEV_KAFKA_PORT"
    start broker broker "$DEV_KAFKA_PORT"
    wait_port broker "$DEV_KAFKA_PORT"
    for topic in ftp-tasks ftp-results ftp-failures ftp-tasks-dlq; do
        "$TESTBED_BIN/tansu" topic create --broker "tcp://$bootstrap" --partitions 3 "$topic" \
            >/dev/null 2>&1 || true   # exits 1 when the topic exists
    done
fi

start vsftpd vsftpd "$DEV_VSFTPD_PORT" "$pasv" $((pasv + 19)) "$ftproot/vsftpd"
start vsftpd-tls vsftpd "$DEV_VSFTPD_TLS_PORT" $((pasv + 20)) $((pasv + 39)) "$ftproot/vsftpd-tls" tls
start pyftpdlib pyftpdlib "$DEV_PYFTPD_PORT" $((pasv + 40)) $((pasv + 59)) "$ftproot/pyftpdlib"
wait_port vsftpd "$DEV_VSFTPD_PORT" greet
wait_port vsftpd-tls "$DEV_VSFTPD_TLS_PORT" greet
wait_port pyftpdlib "$DEV_PYFTPD_PORT" greet

cat > "$piddir/env" <<ENV
export FTP_POOLER_DEV_BOOTSTRAP=$bootstrap
export FTP_POOLER_DEV_VSFTPD_PORT=$DEV_VSFTPD_PORT
export FTP_POOLER_DEV_VSFTPD_TLS_PORT=$DEV_VSFTPD_TLS_PORT
export FTP_POOLER_DEV_PYFTPD_PORT=$DEV_PYFTPD_PORT
export FTP_POOLER_DEV_FTP_ROOT=$ftproot
export FTP_POOLER_DEV_CA=$TESTBED_CERTS/ca.pem
ENV
log "dev stack up: broker $bootstrap; vsftpd :$DEV_VSFTPD_PORT (FTPS :$DEV_VSFTPD_TLS_PORT); pyftpdlib :$DEV_PYFTPD_PORT"
log "pids and logs in $piddir"
