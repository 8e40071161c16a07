#!/bin/sh
# One site's Keycloak of the test harness, as site-sync's `commands` backend drives it (and
# `cargo xtask keycloak` too): start it detached, stop it for real, and tell whether it is stopped.
#
#   keycloak.sh start|stop|is-stopped <run-dir> <site>
#
# <run-dir>/<site>.env (written by `cargo xtask keycloak up`) sets KC_HOME (an unpacked, built
# Keycloak), KC_ARGS (the options of `kc.sh start --optimized`), HTTP_PORT and MANAGEMENT_PORT,
# and exports KC_BOOTSTRAP_ADMIN_USERNAME/PASSWORD. The pid goes to <run-dir>/<site>.pid, the
# output to <run-dir>/<site>.log.
set -eu
command=$1
run=$2
site=$3
. "$run/$site.env"
pidfile="$run/$site.pid"

running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# Something answers on the port (curl exits 7 when the connection is refused).
listening() {
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" || [ $? -ne 7 ]
}

case "$command" in
start)
    if running; then
        exit 0
    fi
    # In the background, immune to the caller's hangup, so that the caller (site-sync, a test)
    # can exit and leave it running. kc.sh forwards TERM to its JVM and waits for it: its pid
    # stands for the JVM's.
    # shellcheck disable=SC2086
    nohup "$KC_HOME/bin/kc.sh" start --optimized $KC_ARGS >>"$run/$site.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    ;;
stop)
    if ! running; then
        rm -f "$pidfile"
        exit 0
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 60 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
    fi
    rm -f "$pidfile"
    ;;
is-stopped)
    # Stopped means no process and nothing on either port.
    if running || listening "$HTTP_PORT" || listening "$MANAGEMENT_PORT"; then
        exit 1
    fi
    ;;
*)
    echo "usage: keycloak.sh start|stop|is-stopped <run-dir> <site>" >&2
    exit 2
    ;;
esac
