#!/usr/bin/env bash
# Load benchmark: fapigate (plain listener, public route) against a minimal Pingora proxy, both in
# front of the same tiny upstream, measured alternately with wrk on this machine.
#
#   bench/load.sh
#
# Environment:
#   DURATION=10s     length of each measured wrk run
#   ROUNDS=2         baseline/fapigate pairs
#   CONNECTIONS=16   wrk connections (one wrk thread)
#   WARMUP=1s        unrecorded wrk run per proxy before the first round ("0" to skip)
#   BENCH_THREADS=1  worker threads of both proxies
#   SKIP_BUILD=1     use the binaries already in target/release
#   KEEP_TMP=1       keep the temporary folder (configuration, certificate, logs)
#
# Needs: cargo, openssl, curl, wrk. Everything listens on 127.0.0.1 only.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-1s}
BENCH_THREADS=${BENCH_THREADS:-1}
export BENCH_THREADS

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/release

die() { echo "load.sh: $*" >&2; exit 1; }

for tool in openssl curl wrk; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install $tool)"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $BENCH_THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer"

# wrk duration ("10s", "1m", "500ms"...) to whole seconds, for the watchdog timeout.
seconds() {
    local d=$1
    case $d in
        *ms) echo 1 ;;
        *s) echo "${d%s}" ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *h) echo $(( ${d%h} * 3600 )) ;;
        *) echo "$d" ;;
    esac
}
[[ $(seconds "$DURATION") =~ ^[0-9]+$ ]] || die "DURATION must look like 10s, 1m"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== building (release)" >&2
    (cd "$repo" && cargo build --release --bin fapigate --examples) >&2
fi
for exe in "$bin/fapigate" "$bin/examples/baseline-proxy" "$bin/examples/bench-upstream"; do
    [[ -x $exe ]] || die "$exe is missing: build first"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fapigate-bench.XXXXXX")
pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "load.sh: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port below the ephemeral range (so wrk's own outgoing sockets cannot take it).
used_ports=" "
free_port() {
    local port i
    for i in $(seq 1 200); do
        port=$(( 20000 + RANDOM % 12000 ))
        [[ $used_ports == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports+="$port "
            echo "$port"
            return
        fi
    done
    die "no free port found"
}
up_port=$(free_port)
base_port=$(free_port)
tls_port=$(free_port)
plain_port=$(free_port)
admin_port=$(free_port)

# Self-signed EC P-256 server certificate (the TLS listener is required, but not measured).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$tmp/server.key" -out "$tmp/server.crt" 2>"$tmp/openssl.log" \
    || { cat "$tmp/openssl.log" >&2; die "openssl failed"; }
chmod 600 "$tmp/server.key"

cat >"$tmp/fapigate.toml" <<EOF
[listener]
addr = "127.0.0.1:$tls_port"
public_url = "https://127.0.0.1:$tls_port"
plain_addr = "127.0.0.1:$plain_port"

[listener.tls]
cert = "$tmp/server.crt"
key = "$tmp/server.key"
client_cert = "off"

[admin]
addr = "127.0.0.1:$admin_port"

[profile]
name = "fapi2"

[server]
threads = $BENCH_THREADS

[log]
level = "warn"

[[upstream]]
id = "bench"
addrs = ["127.0.0.1:$up_port"]
tls = false

[[route]]
id = "status"
methods = ["GET"]
path = "/status"
upstream = "bench"
auth = "none"
EOF

"$bin/examples/bench-upstream" "127.0.0.1:$up_port" >"$tmp/upstream.log" 2>&1 &
up_pid=$!
pids+=("$up_pid")
"$bin/examples/baseline-proxy" "127.0.0.1:$base_port" "127.0.0.1:$up_port" >"$tmp/baseline.log" 2>&1 &
base_pid=$!
pids+=("$base_pid")
"$bin/fapigate" run --config "$tmp/fapigate.toml" >"$tmp/fapigate.log" 2>&1 &
gate_pid=$!
pids+=("$gate_pid")

# wait_for NAME PID URL: until URL answers 200, or fail showing NAME's log.
wait_for() {
    local name=$1 pid=$2 url=$3 i code
    for i in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $name log ($tmp/$name.log)" >&2
            cat "$tmp/$name.log" >&2
            die "$name exited during startup"
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    echo "---- $name log ($tmp/$name.log)" >&2
    cat "$tmp/$name.log" >&2
    die "$name not ready after 15 s ($url last answered ${code:-nothing})"
}
wait_for upstream "$up_pid" "http://127.0.0.1:$up_port/status"
wait_for baseline "$base_pid" "http://127.0.0.1:$base_port/status"
wait_for fapigate "$gate_pid" "http://127.0.0.1:$admin_port/readyz"
wait_for fapigate "$gate_pid" "http://127.0.0.1:$plain_port/status"

clk_tck=$(getconf CLK_TCK)
# utime + stime of the whole process, in clock ticks (fields 14 and 15; comm may hold spaces).
cpu_ticks() {
    local stat rest
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

# Latency text from wrk ("812.00us", "1.23ms", "2.01s") to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /m$/) f = 60000000;
        else if (v ~ /s$/) f = 1000000; else f = 1
        printf "%.0f", n * f
    }'
}

watchdog=$(( $(seconds "$DURATION") + 30 ))
rows=()
declare -A rps p50 p99 cpu
run_wrk() { # run_wrk PORT DURATION -> wrk output on stdout
    timeout "$watchdog" wrk -t1 -c"$CONNECTIONS" -d"$2" --latency "http://127.0.0.1:$1/status"
}

if [[ $WARMUP != 0 ]]; then
    echo "== warm-up ($WARMUP each)" >&2
    run_wrk "$base_port" "$WARMUP" >/dev/null
    run_wrk "$plain_port" "$WARMUP" >/dev/null
fi

run=0
for round in $(seq 1 "$ROUNDS"); do
    for name in baseline fapigate; do
        if [[ $name == baseline ]]; then pid=$base_pid port=$base_port; else pid=$gate_pid port=$plain_port; fi
        run=$((run + 1))
        echo "== run $run: $name, round $round ($DURATION)" >&2
        before=$(cpu_ticks "$pid")
        out=$(run_wrk "$port" "$DURATION") || { echo "$out" >&2; die "wrk failed against $name"; }
        after=$(cpu_ticks "$pid")
        echo "$out" >"$tmp/wrk-$run-$name.txt"

        reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
        r=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        l50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
        l99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
        sockerr=$(awk -F'[ ,]+' '/Socket errors:/ { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s }' <<<"$out")
        errors=$(( ${non2xx:-0} + ${sockerr:-0} ))
        [[ -n $reqs && -n $r && $reqs -gt 0 ]] || { echo "$out" >&2; die "could not parse wrk output"; }
        c=$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')

        rps[$name]+="$r "
        p50[$name]+="$l50 "
        p99[$name]+="$l99 "
        cpu[$name]+="$c "
        rows+=("| $run | $name | $r | $l50 | $l99 | $c | $errors |")
        [[ $errors == 0 ]] || echo "load.sh: warning: $errors failed or non-2xx responses from $name" >&2
    done
done

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS round(s), proxy threads $BENCH_THREADS, $(nproc) CPUs, GET /status"
echo
echo "| run | proxy | req/s | p50 µs | p99 µs | proxy CPU µs/req | errors |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "| median | req/s | p50 µs | p99 µs | proxy CPU µs/req |"
echo "|---|---|---|---|---|"
for name in baseline fapigate; do
    echo "| $name | $(median "${rps[$name]}") | $(median "${p50[$name]}") | $(median "${p99[$name]}") | $(median "${cpu[$name]}") |"
done
echo "| fapigate/baseline | $(ratio "$(median "${rps[fapigate]}")" "$(median "${rps[baseline]}")") \
| $(ratio "$(median "${p50[fapigate]}")" "$(median "${p50[baseline]}")") \
| $(ratio "$(median "${p99[fapigate]}")" "$(median "${p99[baseline]}")") \
| $(ratio "$(median "${cpu[fapigate]}")" "$(median "${cpu[baseline]}")") |"
