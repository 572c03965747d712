#!/usr/bin/env bash
# End-to-end load comparison of jumpgate against nginx as a TLS reverse proxy, on one machine,
# over 127.0.0.1 only. One command:
#
#     bash benches/load.sh
#
# It builds jumpgate in release mode, installs nginx and wrk from Debian when missing, starts
#   - an upstream: nginx answering every request with a static 200 "ok" (one worker),
#   - the stand-in JumpCloud (examples/bench_env.rs), which also writes the gateway configs,
#   - nginx as a TLS proxy_pass baseline (one worker, keep-alive to the upstream),
#   - the floor (bench_env floor): a TLS proxy on jumpgate's own crates and settings (rustls,
#     hyper's server builders, tokio, mimalloc) that only forwards, so that what jumpgate
#     costs above it is its own work, and what it costs above nginx is the crates',
#   - jumpgate (the release binary, TOKIO_WORKER_THREADS=1: one runtime worker thread),
# pins both proxies to the same core (SERVER_CPU) and the load generator and upstream to the
# other (CLIENT_CPU), and measures each row with wrk (64 connections), ROUNDS times DURATION
# seconds, each round of a row right after a round of its nginx row, so that every ratio
# compares figures taken seconds apart: requests/s, p50 and p99 latency, the proxy process's
# CPU time per request (utime + stime from /proc/PID/stat before and after, divided by the
# requests served, also split into user and kernel time) and, when perf can count the
# raw_syscalls tracepoint, its system calls, context switches and wake-ups of other
# processes per request. Rows: direct upstream; nginx TLS proxy; the floor; jumpgate public
# route; protected route with a session; protected with the directory snapshot and the
# signed assertion; a step-up route after a fresh MFA step-up; protected with sessions in Redis (skipped when no Redis answers);
# the directory row again with the access log on as shipped (level info, a line per request,
# to a file) against nginx with its default access log (combined format, buffered); and the
# nginx, floor, public and directory rows again over HTTP/2 with h2load (one stream per
# connection, so each row asks the same of both proxies as its HTTP/1.1 row; p50 and p99 from
# h2load's per-request log). Then it measures sign-ins per second through the whole code flow
# against the stand-in.
# The table is printed and written to $OUT/results.md. Every process the script starts is
# stopped on exit, by PID. Whole run: about nine minutes after the build.
#
# Settings (environment):
#   DURATION (5, seconds a round)  ROUNDS (3)  CONNECTIONS (64)  SERVER_CPU (1)  CLIENT_CPU (0)
#   NICE (-10)  SIGNINS (400)
#   REDIS_URL (redis://127.0.0.1:6379/0; the Redis row's keys carry a per-run prefix)
#   PORT_BASE (18080; uses PORT_BASE .. PORT_BASE+5)  OUT (target/bench-load)
#   SKIP_BUILD (1: use the binaries already in target/release)
#   GW_BIN (target/release/jumpgate: another build to measure, e.g. the previous commit's,
#   copied aside, so that two versions are compared against nginx on the same machine)
#
#     bash benches/load.sh --profile
#
# instead counts instructions per request under valgrind's callgrind, which do not move with
# the machine's load: nginx's TLS proxy, the floor, then jumpgate (directory configuration) on
# its public and its protected route, each under the same short load (8 connections, PROFILE_SECONDS =
# 20 s; over HTTP/2 with PROFILE_H2=1; with both access logs on with PROFILE_LOG=1); prints
# the counts as ratios to nginx's and the floor's, and the protected route's top costs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
OUT=${OUT:-target/bench-load}
PORT_BASE=${PORT_BASE:-18080}
PORT_UP=$PORT_BASE
PORT_NGINX=$((PORT_BASE + 1))
PORT_GW=$((PORT_BASE + 2))
PORT_ADMIN=$((PORT_BASE + 3))
PORT_NGINX_LOG=$((PORT_BASE + 4))
PORT_FLOOR=$((PORT_BASE + 5))
SIGNINS=${SIGNINS:-400}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
PROFILE=0
[ "${1:-}" = "--profile" ] && PROFILE=1

log() { printf '>> %s\n' "$*" >&2; }

# Every process under test, and the load generator, runs pinned (taskset) and, as root, at a
# raised priority (nice -n $NICE), so other work on the machine disturbs the figures less.
# (Prefixes, not functions: a backgrounded command must keep its own PID for /proc.)
NICE=${NICE:--10}
PRIO=()
if [ "$(id -u)" = 0 ] && [ "$NICE" != 0 ]; then PRIO=(nice -n "$NICE"); fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Tools -----------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "load.sh: please install: ${need[*]}" >&2; exit 1; }
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for p in $PORT_UP $PORT_NGINX $PORT_GW $PORT_ADMIN $PORT_NGINX_LOG $PORT_FLOOR; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "load.sh: port $p on 127.0.0.1 is in use; set PORT_BASE" >&2
    exit 1
  fi
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building jumpgate (release) and the benchmark environment"
  # The profile attributes costs to source lines, which the release profile's binaries
  # carry no tables for.
  if [ "$PROFILE" = 1 ]; then export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only; fi
  cargo build --release --locked --bin jumpgate --example bench_env >&2
fi
GW_BIN=${GW_BIN:-target/release/jumpgate}
ENV_BIN=target/release/examples/bench_env

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ENV_DIR=$OUT/env
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

CLK_TCK=$(getconf CLK_TCK)
# System calls per request, when perf can count the raw_syscalls tracepoint here (optional:
# Debian's linux-perf; not installed by this script).
PERF_SYSCALLS=0
PERF_EVENTS=raw_syscalls:sys_enter,context-switches
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
  PERF_SYSCALLS=1
  # Wake-ups the proxy issues (the upstream's or wrk's process woken on the other core): on a
  # virtual machine each costs the waker's kernel several µs (BENCHMARKS.md, round twelve).
  if perf stat -e sched:sched_waking -- true >/dev/null 2>&1; then
    PERF_EVENTS=$PERF_EVENTS,sched:sched_waking
  fi
fi

# perf_start SLUG "PIDS": counts the proxy's system calls, context switches and wake-ups
# issued (kernel tracepoints and a software event, all cheap) over the next DURATION
# seconds, when perf can; sets PERF_PID.
perf_start() {
  PERF_PID=""
  [ "$PERF_SYSCALLS" = 1 ] || return 0
  # shellcheck disable=SC2086
  perf stat -x, -e "$PERF_EVENTS" -p "$(echo $2 | tr ' ' ',')" \
    -o "$OUT/perf-$1.txt" -- sleep "$DURATION" 2>/dev/null &
  PERF_PID=$!
}

# perf_read SLUG REQUESTS: waits for perf_start's count and sets SYSCALLS, SWITCHES and
# WAKEUPS per request ("-" when perf could not count).
perf_read() {
  SYSCALLS="-" SWITCHES="-" WAKEUPS="-"
  [ -n "$PERF_PID" ] || return 0
  wait "$PERF_PID" || true
  read -r SYSCALLS SWITCHES WAKEUPS <<<"$(awk -F, -v n="$2" '/raw_syscalls/ {c = $1}
    /context-switches/ {w = $1} /sched_waking/ {k = $1}
    END {if (n > 0 && c != "") printf "%.2f %.2f %s", c / n, w / n, (k != "" ? sprintf("%.3f", k / n) : "-");
      else print "- - -"}' "$OUT/perf-$1.txt" 2>/dev/null || echo "- - -")"
}

# CPU ticks of the given PIDs, summed: "utime stime".
cpu_ticks() {
  local user=0 sys=0 pid stat
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat")
    # Fields after the command name (which may hold spaces): state is field 3.
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    user=$((user + ${12}))
    sys=$((sys + ${13}))
  done
  echo "$user $sys"
}

wait_http() { # URL [extra curl args]: until it answers 200, at most 30 s
  local url=$1; shift
  for _ in $(seq 1 300); do
    if [ "$(curl -sk -o /dev/null -w '%{http_code}' "$@" "$url" || true)" = 200 ]; then return 0; fi
    sleep 0.1
  done
  echo "load.sh: $url never answered 200" >&2
  return 1
}

# --- Upstream and the nginx TLS proxy ---------------------------------------------------------
mkdir -p "$OUT/nginx-up" "$OUT/nginx-proxy"
cat >"$OUT/nginx-up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/nginx-up/nginx.pid;
error_log $OUT/nginx-up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$PORT_UP;
    location / { return 200 "ok\n"; }
  }
}
EOF

log "starting the stand-in JumpCloud and writing the gateway configurations"
"${PRIO[@]}" taskset -c "$CLIENT_CPU" "$ENV_BIN" idp --dir "$ENV_DIR" --gateway-port "$PORT_GW" \
  --upstream-port "$PORT_UP" --admin-port "$PORT_ADMIN" --redis-url "$REDIS_URL" --max-seconds 900 \
  >"$OUT/idp.json" 2>"$OUT/idp.log" &
PIDS+=($!)
for _ in $(seq 1 300); do [ -s "$OUT/idp.json" ] && break; sleep 0.1; done
[ -s "$OUT/idp.json" ] || { cat "$OUT/idp.log" >&2; exit 1; }
cp "$OUT/idp.json" "$ENV_DIR/idp.json"

# The TLS proxy's work, the same in both of its servers.
NGINX_TLS_PROXY=$(cat <<EOF
    ssl_certificate $ENV_DIR/gateway.pem;
    ssl_certificate_key $ENV_DIR/gateway.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
EOF
)
cat >"$OUT/nginx-proxy/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/nginx-proxy/nginx.pid;
error_log $OUT/nginx-proxy/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream backend {
    server 127.0.0.1:$PORT_UP;
    keepalive 64;
    keepalive_requests 10000000;
  }
  server {
    # HTTP/2 by ALPN, as jumpgate; "http2" on listen is understood by every nginx since 1.9.5.
    listen 127.0.0.1:$PORT_NGINX ssl http2;
$NGINX_TLS_PROXY
  }
  # The same with nginx's default access log (combined format), buffered as a production
  # configuration would have it.
  server {
    listen 127.0.0.1:$PORT_NGINX_LOG ssl;
$NGINX_TLS_PROXY
    access_log $OUT/nginx-proxy/access.log combined buffer=64k flush=1s;
  }
}
EOF

log "starting nginx (upstream on CPU $CLIENT_CPU, TLS proxy on CPU $SERVER_CPU)"
"${PRIO[@]}" taskset -c "$CLIENT_CPU" "$NGINX" -p "$OUT/nginx-up" -e "$OUT/nginx-up/error.log" -c "$OUT/nginx-up/nginx.conf" \
  2>"$OUT/nginx-up/stderr.log" &
UP_PID=$!
PIDS+=($UP_PID)
"${PRIO[@]}" taskset -c "$SERVER_CPU" "$NGINX" -p "$OUT/nginx-proxy" -e "$OUT/nginx-proxy/error.log" -c "$OUT/nginx-proxy/nginx.conf" \
  2>"$OUT/nginx-proxy/stderr.log" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_http "http://127.0.0.1:$PORT_UP/"
wait_http "https://127.0.0.1:$PORT_NGINX/public" -H "Host: app.test"

# All processes of an nginx instance: its master and its worker(s).
nginx_pids() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# --- Measuring --------------------------------------------------------------------------------
# Every row is measured ROUNDS times, DURATION seconds each after a 1 s warm-up, and every row
# after nginx's alternates with its nginx baseline (pair_with: the same protocol and logging),
# so that both sides of each ratio are measured within seconds of each other. This machine's
# speed drifts over minutes (other tenants, clock frequency): with one nginx row at the start
# of the run, runs of the same build put a row's ratio anywhere within ±0.2. A row's ratio is
# the median of its rounds' ratios, printed with their range; its own figures are medians
# over its rounds (CPU per request: all its rounds' CPU over all their requests).
ROWS=()
PERF_SLUG=""
BASE_KIND="" BASE_URL="" BASE_PIDS="" BASE_ARGS=()
SAMPLES=0

to_ms() { # wrk latency such as 812.00us, 1.23ms, 2.01s -> milliseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
  if (NR % 2) printf "%s", v[(NR + 1) / 2]; else printf "%s", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f–%.2f", lo, hi}'; }

# sample h1|h2 NAME URL "PIDS" [wrk or h2load args...]: a 1 s warm-up, then DURATION seconds
# measured with wrk (h1) or h2load (h2, one stream per connection, latency from its
# per-request log). Sets S_REQ (requests answered), S_RPS, S_P50 and S_P99 (ms), S_UT and
# S_ST (CPU ticks of PIDS, user and kernel). With PERF_SLUG set, perf counts the measured
# seconds (perf_start). Any error or non-2xx answer ends the run.
sample() {
  local kind=$1 name=$2 url=$3 pids=$4; shift 4
  local before after out total warm run
  SAMPLES=$((SAMPLES + 1))
  local file=$OUT/sample-$SAMPLES-$(echo "$name" | tr -c 'a-zA-Z0-9' '-')
  if [ "$kind" = h1 ]; then
    warm=(wrk -t1 -c"$CONNECTIONS" -d1s)
    run=(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency)
  else
    warm=(h2load -D 1 -c"$CONNECTIONS" -m1 -t1)
    run=(h2load -D "$DURATION" -c"$CONNECTIONS" -m1 -t1 --log-file="$file.log")
  fi
  "${PRIO[@]}" taskset -c "$CLIENT_CPU" "${warm[@]}" "$@" "$url" >/dev/null
  [ -z "$PERF_SLUG" ] || perf_start "$PERF_SLUG" "$pids"
  # shellcheck disable=SC2086
  before=$(cpu_ticks $pids)
  out=$("${PRIO[@]}" taskset -c "$CLIENT_CPU" "${run[@]}" "$@" "$url")
  # shellcheck disable=SC2086
  after=$(cpu_ticks $pids)
  echo "$out" >"$file.txt"
  S_UT=$((${after% *} - ${before% *}))
  S_ST=$((${after#* } - ${before#* }))
  if [ "$kind" = h1 ]; then
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
      echo "load.sh: $name: wrk reported errors:" >&2
      echo "$out" >&2
      exit 1
    fi
    S_REQ=$(echo "$out" | awk '/requests in/ {print $1}')
    S_RPS=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    S_P50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    S_P99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  else
    read -r total S_REQ <<<"$(echo "$out" | awk '/^requests:/ {print $2, $8}')"
    if ! echo "$out" | grep -q "status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" || [ "$total" != "$S_REQ" ] || [ "${total:-0}" = 0 ]; then
      echo "load.sh: $name: h2load reported failures or non-2xx answers:" >&2
      echo "$out" >&2
      exit 1
    fi
    S_RPS=$(echo "$out" | awk '/^finished in/ {gsub(",", ""); printf "%.0f", $4}')
    read -r S_P50 S_P99 <<<"$(cut -f3 "$file.log" | sort -n | awk '{v[NR] = $1} END {
      printf "%.3f %.3f", v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }')"
  fi
}

# cpu_us TICKS REQUESTS: CPU µs per request.
cpu_us() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}'; }

# pair_with h1|h2 URL "PIDS" [args...]: the nginx row the rows after it alternate with.
pair_with() { BASE_KIND=$1 BASE_URL=$2 BASE_PIDS=$3; shift 3; BASE_ARGS=("$@"); }

# measure h1|h2 NAME URL "PIDS" [wrk or h2load args...]: one row of the table.
measure() {
  local kind=$1 name=$2 url=$3 pids=$4; shift 4
  if [ "$kind" = h1 ]; then
    local code
    code=$(curl -sk -o /dev/null -w '%{http_code}' "$@" "$url" || true)
    if [ "$code" != 200 ]; then
      echo "load.sh: $name: $url answered $code, not 200" >&2
      exit 1
    fi
  fi
  local paired=0
  case "$name" in nginx* | "direct upstream") ;; *) [ -n "$BASE_URL" ] && paired=1 ;; esac
  local r rps=() p50=() p99=() cpu=() vs_cpu=() vs_rps=() vs_p99=() ut=0 st=0 req=0
  local base_cpu base_rps base_p99 slug
  slug=$(echo "$name" | tr -c 'a-zA-Z0-9' '-')
  for r in $(seq 1 "$ROUNDS"); do
    if [ "$paired" = 1 ]; then
      sample "$BASE_KIND" "baseline for $name" "$BASE_URL" "$BASE_PIDS" "${BASE_ARGS[@]}"
      base_cpu=$(cpu_us $((S_UT + S_ST)) "$S_REQ") base_rps=$S_RPS base_p99=$S_P99
    fi
    # perf counts the first round's measured seconds (sample starts it after the warm-up).
    PERF_SLUG=""
    [ "$r" != 1 ] || PERF_SLUG=$slug
    sample "$kind" "$name" "$url" "$pids" "$@"
    [ "$r" != 1 ] || perf_read "$slug" "$S_REQ"
    PERF_SLUG=""
    rps+=("$S_RPS") p50+=("$S_P50") p99+=("$S_P99") cpu+=("$(cpu_us $((S_UT + S_ST)) "$S_REQ")")
    ut=$((ut + S_UT)) st=$((st + S_ST)) req=$((req + S_REQ))
    if [ "$paired" = 1 ]; then
      vs_cpu+=("$(awk -v a="${cpu[-1]}" -v b="$base_cpu" 'BEGIN {printf "%.4f", a / b}')")
      vs_rps+=("$(awk -v a="$S_RPS" -v b="$base_rps" 'BEGIN {printf "%.4f", a / b}')")
      vs_p99+=("$(awk -v a="$S_P99" -v b="$base_p99" 'BEGIN {printf "%.4f", a / b}')")
    fi
  done
  local ratio="" cpu_all split util
  if [ "$paired" = 1 ]; then
    ratio=$(awk -v c="$(median "${vs_cpu[@]}")" -v cr="$(range "${vs_cpu[@]}")" -v r="$(median "${vs_rps[@]}")" \
      -v rr="$(range "${vs_rps[@]}")" -v p="$(median "${vs_p99[@]}")" -v pr="$(range "${vs_p99[@]}")" \
      'BEGIN {printf "CPU %.2f× (%s), req/s %.2f× (%s), p99 %.2f× (%s)", c, cr, r, rr, p, pr}')
  fi
  split="$(cpu_us "$ut" "$req" | awk '{printf "%.1f", $1}')+$(cpu_us "$st" "$req" | awk '{printf "%.1f", $1}')"
  util=$(awk -v t=$((ut + st)) -v hz="$CLK_TCK" -v d=$((DURATION * ROUNDS)) 'BEGIN {printf "%.0f", t / hz / d * 100}')
  cpu_all=$(cpu_us $((ut + st)) "$req" | awk '{printf "%.1f", $1}')
  local m_rps m_p50 m_p99
  m_rps=$(median "${rps[@]}") m_p50=$(median "${p50[@]}") m_p99=$(median "${p99[@]}")
  ROWS+=("| $name | $m_rps | $m_p50 | $m_p99 | $cpu_all | $split | $util % | $SYSCALLS | $SWITCHES | $WAKEUPS | ${ratio:--} |")
  log "$name: $m_rps req/s, p99 $m_p99 ms, $cpu_all µs CPU/request (user + sys $split; $util % of a core); rounds: ${cpu[*]} µs${ratio:+; $ratio}"
}

start_gateway() { # CONFIG
  TOKIO_WORKER_THREADS=1 "${PRIO[@]}" taskset -c "$SERVER_CPU" "$GW_BIN" run --config "$1" \
    2>>"$OUT/jumpgate.log" &
  GW_PID=$!
  PIDS+=($GW_PID)
  wait_http "http://127.0.0.1:$PORT_ADMIN/readyz"
}

stop_gateway() {
  kill "$GW_PID" 2>/dev/null || true
  wait "$GW_PID" 2>/dev/null || true
}

# start_floor [PREFIX...]: the floor, on the gateway's core with one runtime worker as the
# gateway has; PREFIX (e.g. valgrind) runs it under a tool. Sets FLOOR_PID.
start_floor() {
  TOKIO_WORKER_THREADS=1 "${PRIO[@]}" taskset -c "$SERVER_CPU" "$@" "$ENV_BIN" floor --dir "$ENV_DIR" \
    --port "$PORT_FLOOR" --upstream-port "$PORT_UP" 2>>"$OUT/floor.log" &
  FLOOR_PID=$!
  PIDS+=($FLOOR_PID)
}

sign_in() { # [--step-up PATH]
  "${PRIO[@]}" taskset -c "$CLIENT_CPU" "$ENV_BIN" signin --dir "$ENV_DIR" --gateway-port "$PORT_GW" "$@" \
    | sed -n 's/.*"cookie":"\([^"]*\)".*/\1/p'
}

# --- Profile mode: instructions per request under callgrind ------------------------------------
# Instruction counts do not move with the machine's load the way CPU time does, so the same
# load is counted for nginx's TLS proxy and for jumpgate's public and protected routes, each
# process under callgrind with instrumentation on for the measured load only.
if [ "$PROFILE" = 1 ]; then
  command -v valgrind >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  }
  # PROFILE_LOG=1: jumpgate with the access log on, as shipped, against nginx's buffered one
  # (over HTTP/1.1: nginx's server with the log does not offer h2).
  PROFILE_CONFIG="" NGINX_PROFILE_PORT=$PORT_NGINX
  if [ "${PROFILE_LOG:-0}" = 1 ]; then PROFILE_CONFIG="-log" NGINX_PROFILE_PORT=$PORT_NGINX_LOG; fi
  PROTOCOL="HTTP/1.1"
  [ "${PROFILE_H2:-0}" = 1 ] && PROTOCOL="HTTP/2"
  PROFILE_COOKIE=""
  # profile_load PORT PATH SECONDS: 8 connections, over HTTP/1.1 (wrk) or, with PROFILE_H2=1,
  # over HTTP/2 (h2load, one stream per connection), with PROFILE_COOKIE when set; prints the
  # number of requests answered.
  profile_load() {
    local cookie=()
    if [ "${PROFILE_H2:-0}" = 1 ]; then
      [ -n "$PROFILE_COOKIE" ] && cookie=(-H "cookie: $PROFILE_COOKIE")
      "${PRIO[@]}" taskset -c "$CLIENT_CPU" h2load -D "$3" -c8 -m1 -t1 --connect-to="127.0.0.1:$1" \
        "${cookie[@]}" "https://app.test:$1$2" | tee -a "$OUT/load-profile.txt" | awk '/^requests:/ {print $8}'
    else
      [ -n "$PROFILE_COOKIE" ] && cookie=(-H "Cookie: $PROFILE_COOKIE")
      "${PRIO[@]}" taskset -c "$CLIENT_CPU" wrk -t1 -c8 -d"$3s" -H "Host: app.test" "${cookie[@]}" \
        "https://127.0.0.1:$1$2" | tee -a "$OUT/load-profile.txt" | awk '/requests in/ {print $1}'
    fi
  }
  # count NAME PID PORT PATH: a 5 s warm-up, then PROFILE_SECONDS (20) counted; records the
  # instructions per request and leaves the dump's path in DUMP.
  COUNTED=()
  count() {
    local name=$1 pid=$2 requests total per
    # Instrumentation is turned on once and left on: switching it off and on again between
    # dumps makes callgrind's later dumps wrong. The counters are zeroed after the warm-up.
    callgrind_control -i on "$pid" >/dev/null
    profile_load "$3" "$4" 5 >/dev/null
    callgrind_control -z "$pid" >/dev/null
    requests=$(profile_load "$3" "$4" "${PROFILE_SECONDS:-20}")
    callgrind_control -d "$pid" >/dev/null
    DUMP=$(printf '%s\n' "$OUT"/callgrind.out."$pid".* | sort -V | tail -1)
    total=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    per=$(awk -v t="$total" -v n="$requests" 'BEGIN {if (n > 0 && t > 0) printf "%.0f", t / n; else print 0}')
    echo "callgrind: $name: $requests requests, $total instructions, $per per request ($DUMP)" >&2
    COUNTED+=("$name|$per")
  }
  # A process under valgrind takes a while to answer; wait_http gives up after 30 s.
  wait_slow() { for _ in $(seq 1 600); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' "$@" || true)" = 200 ] && return 0; sleep 0.2; done; return 1; }

  log "profiling nginx's TLS proxy under callgrind (one process: master_process off)"
  kill "$NGINX_PID" 2>/dev/null || true
  wait "$NGINX_PID" 2>/dev/null || true
  sed 's/^worker_processes 1;/worker_processes 1;\nmaster_process off;/' "$OUT/nginx-proxy/nginx.conf" \
    >"$OUT/nginx-proxy/nginx-profile.conf"
  "${PRIO[@]}" taskset -c "$SERVER_CPU" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.out.%p" "$NGINX" -p "$OUT/nginx-proxy" -e "$OUT/nginx-proxy/error.log" \
    -c "$OUT/nginx-proxy/nginx-profile.conf" 2>"$OUT/nginx-proxy/stderr.log" &
  NGINX_PID=$!
  PIDS+=($NGINX_PID)
  wait_slow "https://127.0.0.1:$NGINX_PROFILE_PORT/public" -H "Host: app.test"
  count "nginx TLS proxy" "$NGINX_PID" "$NGINX_PROFILE_PORT" /public
  kill "$NGINX_PID" 2>/dev/null || true

  log "profiling the floor (jumpgate's crates, forwarding only) under callgrind"
  start_floor valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out.%p"
  wait_slow "https://127.0.0.1:$PORT_FLOOR/public" -H "Host: app.test"
  count "floor: jumpgate's crates, forwarding only" "$FLOOR_PID" "$PORT_FLOOR" /public
  kill "$FLOOR_PID" 2>/dev/null || true

  log "profiling jumpgate (directory config$PROFILE_CONFIG) under callgrind"
  TOKIO_WORKER_THREADS=1 "${PRIO[@]}" taskset -c "$SERVER_CPU" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.out.%p" "$GW_BIN" run --config "$ENV_DIR/gateway-directory$PROFILE_CONFIG.toml" \
    2>>"$OUT/jumpgate.log" &
  GW_PID=$!
  PIDS+=($GW_PID)
  wait_slow "http://127.0.0.1:$PORT_ADMIN/readyz"
  count "jumpgate public route" "$GW_PID" "$PORT_GW" /public
  PROFILE_COOKIE=$(sign_in)
  [ -n "$PROFILE_COOKIE" ] || { echo "load.sh: sign-in failed" >&2; exit 1; }
  count "jumpgate protected, session + directory + assertion" "$GW_PID" "$PORT_GW" /private
  stop_gateway

  echo "instructions per request under callgrind ($PROTOCOL, 8 connections, ${PROFILE_SECONDS:-20} s${PROFILE_CONFIG:+, access logs on}):"
  base="" floor=""
  for c in "${COUNTED[@]}"; do
    name=${c%|*} per=${c##*|}
    if [ -z "$base" ]; then base=$per; elif [ -z "$floor" ]; then floor=$per; fi
    awk -v n="$name" -v p="$per" -v b="$base" -v f="${floor:-0}" 'BEGIN {
      printf "  %-55s %8d  %.2f× nginx", n, p, p / b
      if (f > 0) printf "  %.2f× floor", p / f
      printf "\n" }'
  done
  callgrind_annotate --inclusive=no --threshold=100 "$DUMP" >"$OUT/callgrind-self.txt" 2>/dev/null || true
  callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" >"$OUT/callgrind-inclusive.txt" 2>/dev/null || true
  echo "--- the protected route, self cost (exclusive), top 40 (all: $OUT/callgrind-self.txt)"
  sed -n '/^Ir/,$p' "$OUT/callgrind-self.txt" | sed -n '1,45p'
  echo "--- the protected route, inclusive cost, top 60 (all: $OUT/callgrind-inclusive.txt)"
  sed -n '/^Ir/,$p' "$OUT/callgrind-inclusive.txt" | sed -n '1,65p'
  exit 0
fi

NGINX_H1=(h1 "https://127.0.0.1:$PORT_NGINX/public" "$(nginx_pids "$NGINX_PID")" -H "Host: app.test")
log "direct upstream"
measure h1 "direct upstream" "http://127.0.0.1:$PORT_UP/public" "$(nginx_pids "$UP_PID")" -H "Host: app.test"
log "nginx TLS proxy"
measure "${NGINX_H1[0]}" "nginx TLS proxy" "${NGINX_H1[@]:1}"
pair_with "${NGINX_H1[@]}"
log "the floor: jumpgate's crates, forwarding only"
start_floor
wait_http "https://127.0.0.1:$PORT_FLOOR/public" -H "Host: app.test"
measure h1 "floor: jumpgate's crates, forwarding only" "https://127.0.0.1:$PORT_FLOOR/public" "$FLOOR_PID" -H "Host: app.test"

log "jumpgate (sign-in, no directory)"
start_gateway "$ENV_DIR/gateway-session.toml"
measure h1 "jumpgate public route" "https://127.0.0.1:$PORT_GW/public" "$GW_PID" -H "Host: app.test"
COOKIE=$(sign_in)
[ -n "$COOKIE" ] || { echo "load.sh: sign-in failed" >&2; exit 1; }
measure h1 "jumpgate protected, session" "https://127.0.0.1:$PORT_GW/private" "$GW_PID" \
  -H "Host: app.test" -H "Cookie: $COOKIE"
stop_gateway

log "jumpgate (sign-in, directory snapshot, allow_groups)"
start_gateway "$ENV_DIR/gateway-directory.toml"
COOKIE=$(sign_in)
[ -n "$COOKIE" ] || { echo "load.sh: sign-in failed" >&2; exit 1; }
measure h1 "jumpgate protected, session + directory + assertion" "https://127.0.0.1:$PORT_GW/private" "$GW_PID" \
  -H "Host: app.test" -H "Cookie: $COOKIE"
DIRECTORY_COOKIE=$COOKIE
COOKIE=$(sign_in --step-up /admin)
[ -n "$COOKIE" ] || { echo "load.sh: step-up sign-in failed" >&2; exit 1; }
measure h1 "jumpgate step-up route (fresh MFA) + directory + assertion" "https://127.0.0.1:$PORT_GW/admin" "$GW_PID" \
  -H "Host: app.test" -H "Cookie: $COOKIE"

log "sign-ins through the whole code flow ($SIGNINS, 8 browsers)"
read -r bu bs <<<"$(cpu_ticks "$GW_PID")"
SIGNIN_JSON=$("${PRIO[@]}" taskset -c "$CLIENT_CPU" "$ENV_BIN" signin --dir "$ENV_DIR" --gateway-port "$PORT_GW" \
  --count "$SIGNINS" --concurrency 8 --max-seconds 20)
read -r au as <<<"$(cpu_ticks "$GW_PID")"
SIGNIN_RATE=$(echo "$SIGNIN_JSON" | sed -n 's/.*"per_second":\([0-9.]*\).*/\1/p')
SIGNIN_COUNT=$(echo "$SIGNIN_JSON" | sed -n 's/.*"signins":\([0-9]*\).*/\1/p')
SIGNIN_CPU=$(awk -v t=$((au + as - bu - bs)) -v hz="$CLK_TCK" -v n="$SIGNIN_COUNT" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')

log "HTTP/2 (h2load, one stream per connection)"
# h2load takes :authority and the TLS server name from the URL, and is sent to loopback.
NGINX_H2=(h2 "https://app.test:$PORT_NGINX/public" "$(nginx_pids "$NGINX_PID")" --connect-to="127.0.0.1:$PORT_NGINX")
measure "${NGINX_H2[0]}" "nginx TLS proxy, HTTP/2" "${NGINX_H2[@]:1}"
pair_with "${NGINX_H2[@]}"
measure h2 "floor: jumpgate's crates, forwarding only, HTTP/2" "https://app.test:$PORT_FLOOR/public" "$FLOOR_PID" \
  --connect-to="127.0.0.1:$PORT_FLOOR"
kill "$FLOOR_PID" 2>/dev/null || true
measure h2 "jumpgate public route, HTTP/2" "https://app.test:$PORT_GW/public" "$GW_PID" --connect-to="127.0.0.1:$PORT_GW"
measure h2 "jumpgate protected, session + directory + assertion, HTTP/2" "https://app.test:$PORT_GW/private" "$GW_PID" \
  --connect-to="127.0.0.1:$PORT_GW" -H "cookie: $DIRECTORY_COOKIE"
stop_gateway

log "access logs on: nginx's default (combined, buffered) and jumpgate's as shipped (level info)"
NGINX_LOG=(h1 "https://127.0.0.1:$PORT_NGINX_LOG/public" "$(nginx_pids "$NGINX_PID")" -H "Host: app.test")
measure "${NGINX_LOG[0]}" "nginx TLS proxy, access log" "${NGINX_LOG[@]:1}"
pair_with "${NGINX_LOG[@]}"
start_gateway "$ENV_DIR/gateway-directory-log.toml"
COOKIE=$(sign_in)
[ -n "$COOKIE" ] || { echo "load.sh: sign-in failed" >&2; exit 1; }
measure h1 "jumpgate protected, session + directory + assertion, access log" "https://127.0.0.1:$PORT_GW/private" "$GW_PID" \
  -H "Host: app.test" -H "Cookie: $COOKIE"
stop_gateway

if [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null || true)" = PONG ] ||
  (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  log "jumpgate (sessions in Redis at $REDIS_URL)"
  pair_with "${NGINX_H1[@]}"
  start_gateway "$ENV_DIR/gateway-redis.toml"
  COOKIE=$(sign_in)
  [ -n "$COOKIE" ] || { echo "load.sh: sign-in failed" >&2; exit 1; }
  measure h1 "jumpgate protected, session in Redis (local cache in front)" "https://127.0.0.1:$PORT_GW/private" "$GW_PID" \
    -H "Host: app.test" -H "Cookie: $COOKIE"
  stop_gateway
else
  ROWS+=("| jumpgate protected, session in Redis | n/a (no Redis at $REDIS_URL) | | | | | | | | | |")
fi

# --- Report -----------------------------------------------------------------------------------
{
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), Linux $(uname -r);" \
    "load average before the run: $LOAD_BEFORE"
  echo "wrk (HTTP/1.1 keep-alive) and h2load: 1 thread, $CONNECTIONS connections; each row $ROUNDS rounds of" \
    "${DURATION} s (each after a 1 s warm-up), alternating with its nginx row; proxies on CPU $SERVER_CPU," \
    "wrk and upstream on CPU $CLIENT_CPU, nice $NICE"
  echo
  echo "| row | requests/s | p50 ms | p99 ms | proxy CPU µs/request | of which user + sys | proxy CPU use | syscalls/request | context switches/request | wake-ups issued/request | vs nginx TLS: median of the rounds (range) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  printf 'Sign-ins through the whole code flow (protected page → provider → callback → session), 8 browsers: %.1f/s (%s in the run), jumpgate CPU %s µs per sign-in\n' \
    "$SIGNIN_RATE" "$SIGNIN_COUNT" "$SIGNIN_CPU"
} | tee "$OUT/results.md"
