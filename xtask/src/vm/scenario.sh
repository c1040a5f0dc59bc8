#!/bin/sh
# Scenarios of `cargo xtask vm-test`, run by busybox sh inside the VM (from /init).
#
# nginx serves $W/www on 127.0.0.1 and [::1]; busybox nc and wget are the clients. The agent
# traces the processes of one cgroup (this shell's and its children's), with `--output json`.
# Everything goes to the console as lines starting with "@vm " (kernel messages are ignored):
#   @vm kernel VERSION
#   @vm step NAME ok|fail DETAIL     one check made here (agent ready, exit status, traffic)
#   @vm span RUN JSON                 a span the agent printed in run RUN
#   @vm agent RUN LINE                the agent's stderr in run RUN
#   @vm end
# The spans are checked by xtask (src/vm/expect.rs). Ports are fixed: the VM is the only user.

set -u
W=${VM_WORK:-/vm}
TRACER=${VM_TRACER:-/bin/tracer}
CG=${VM_CGROUP:-/sys/fs/cgroup/vmtest}
PORT=8080

say() { echo "@vm $*"; }
step() { say step "$@"; }

# request PATH [close]: an HTTP/1.1 GET, the last of its connection with "close".
request() {
    if [ "${2:-}" = close ]; then
        printf 'GET %s HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n' "$1"
    else
        printf 'GET %s HTTP/1.1\r\nHost: vm\r\n\r\n' "$1"
    fi
}

# expect_responses NAME FILE N: FILE holds N responses with status 200.
expect_responses() {
    got=$(responses "$2")
    if [ "$got" = "$3" ]; then step "$1" ok "$3 responses"; else step "$1" fail "$got of $3 responses with status 200"; fi
}

# wait_for SECS COMMAND...: poll COMMAND every 0.2 s; false on timeout.
wait_for() {
    n=$(($1 * 5))
    shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -le 0 ] && return 1
        sleep 0.2
    done
}

ready_or_gone() { grep -q 'tracer: ready' "$1" || ! kill -0 "$AGENT"; }

# start_agent RUN ARGS...: start the agent and wait until it is ready (or gone).
start_agent() {
    run=$1
    shift
    t0=$(date +%s)
    # No CPU limit: under emulation the agent's start-up and first spans take more than the
    # default budget, and these runs check what is captured, not overload shedding.
    "$TRACER" --output json --cgroup "$CG" --cpu-budget 1024 "$@" >"$W/$run.spans" 2>"$W/$run.err" &
    AGENT=$!
    wait_for 600 ready_or_gone "$W/$run.err"
    if grep -q 'tracer: ready' "$W/$run.err"; then
        step "$run.ready" ok "in $(($(date +%s) - t0)) s"
        return 0
    fi
    step "$run.ready" fail "$(grep -m1 'error' "$W/$run.err" || tail -n1 "$W/$run.err")"
    kill "$AGENT" 2>/dev/null
    wait "$AGENT"
    sed "s/^/@vm agent $run /" "$W/$run.err"
    return 1
}

has_lines() { [ "$(wc -l <"$1")" -ge "$2" ]; }
# Bodies have no newline: the next status line may follow one on the same line.
responses() { grep -o 'HTTP/1.1 200 ' "$1" | wc -l; }
has_responses() { [ "$(responses "$1")" -ge "$2" ]; }

# stop_agent RUN N: wait (at most 60 s) for N spans, then stop the agent (it flushes) and print
# what it wrote.
stop_agent() {
    wait_for 60 has_lines "$W/$1.spans" "$2"
    # Spans that should not be there have a moment to show up.
    sleep 1
    kill -INT "$AGENT"
    wait "$AGENT"
    rc=$?
    if [ "$rc" = 0 ]; then step "$1.exit" ok "status 0"; else step "$1.exit" fail "status $rc"; fi
    sed "s/^/@vm span $1 /" "$W/$1.spans"
    sed "s/^/@vm agent $1 /" "$W/$1.err"
}

say kernel "$(uname -r)"
ip link set lo up

mkdir -p "$CG" && echo $$ >"$CG/cgroup.procs" || step cgroup fail "cannot enter $CG"

mkdir -p "$W/www/pre" "$W/www/keep" "$W/www/pipe" "$W/www/wget" "$W/www/inject" "$W/nginx"
# Bodies of distinct sizes, so a span's response size tells which file it was.
mk() { head -c "$2" /dev/zero | tr '\0' x >"$W/www/$1"; }
mk ready.txt 1
mk pre/before.txt 11
mk pre/after.txt 2222
mk pre/again.txt 33
mk keep/1.txt 100
mk keep/2.txt 4000
mk pipe/1.txt 300
mk pipe/2.txt 5000
mk wget/v4.txt 444
mk wget/v6.txt 666
mk inject/a.txt 77
cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
error_log $W/nginx/error.log notice;
pid $W/nginx/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $W/nginx;
    proxy_temp_path $W/nginx;
    fastcgi_temp_path $W/nginx;
    uwsgi_temp_path $W/nginx;
    scgi_temp_path $W/nginx;
    server {
        listen 127.0.0.1:$PORT;
        listen [::1]:$PORT;
        root $W/www;
    }
}
EOF
nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" -e "$W/nginx/error.log" &
NGINX=$!
if wait_for 30 wget -q -O /dev/null "http://127.0.0.1:$PORT/ready.txt"; then
    step nginx ok "listening on $PORT"
else
    step nginx fail "$(tail -n3 "$W/nginx/error.log" | tr '\n' ' ')"
fi

# A connection opened, and used, before the agent starts.
mkfifo "$W/pre.in"
nc 127.0.0.1 $PORT <"$W/pre.in" >"$W/pre.out" &
PRE=$!
exec 3>"$W/pre.in"
request /pre/before.txt >&3
wait_for 10 has_responses "$W/pre.out" 1 || step pre.before fail "no response"

if start_agent plain; then
    # The pre-existing connection: two more requests on it.
    request /pre/after.txt >&3
    wait_for 10 has_responses "$W/pre.out" 2
    request /pre/again.txt close >&3
    exec 3>&-
    wait "$PRE"
    expect_responses pre "$W/pre.out" 3

    # Keep-alive: two requests, one after the other's response, on one connection.
    { request /keep/1.txt; sleep 1; request /keep/2.txt close; } | nc 127.0.0.1 $PORT >"$W/keep.out"
    expect_responses keepalive "$W/keep.out" 2

    # Pipelining: two requests in one write, before either response.
    { request /pipe/1.txt; request /pipe/2.txt close; } >"$W/pipe.req"
    nc 127.0.0.1 $PORT <"$W/pipe.req" >"$W/pipe.out"
    expect_responses pipelining "$W/pipe.out" 2

    # New connections, IPv4 and IPv6, and a 404.
    wget -q -O "$W/v4.out" "http://127.0.0.1:$PORT/wget/v4.txt" && step wget.v4 ok "" || step wget.v4 fail "exit $?"
    wget -q -O "$W/v6.out" "http://[::1]:$PORT/wget/v6.txt" && step wget.v6 ok "" || step wget.v6 fail "exit $?"
    if wget -q -O /dev/null "http://127.0.0.1:$PORT/wget/missing.txt" 2>/dev/null; then
        step wget.404 fail "the request succeeded"
    else
        step wget.404 ok ""
    fi
    stop_agent plain 18
fi

# Context injection: the sock_ops, sk_msg and request-head programs load and attach, and a
# request of a traced client carries the context into the server's span.
if start_agent inject --inject-context; then
    wget -q -O /dev/null "http://127.0.0.1:$PORT/inject/a.txt" && step wget.inject ok "" || step wget.inject fail "exit $?"
    stop_agent inject 2
fi

kill "$NGINX"
wait "$NGINX"
say end
