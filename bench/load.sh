#!/usr/bin/env bash
# Load benchmark: fapigate (plain listener) in front of a tiny upstream, measured with wrk on this
# machine, each scenario against a reference measured in the same run.
#
#   bench/load.sh [SCENARIO]        (or SCENARIO=... bench/load.sh)
#
# Scenarios:
#   baseline  fapigate's public route (auth = "none", GET /status) against a minimal Pingora
#             proxy, together or alternately (LOAD below; the default scenario)
#   dpop      GET /accounts with a DPoP-bound JWT access token and a fresh DPoP proof on every
#             request (pre-signed by bench/gen_dpop.rs, sent by bench/dpop.lua), against
#             fapigate's GET /status (auth none) and against HAProxy checking the same ES256
#             JWT (jwt_verify: signature and exp) as a Bearer token; the same with the replay
#             records in Redis; a cached introspected opaque token with a fresh DPoP proof;
#             an mTLS-bound JWT over a client-certificate connection (wrk cannot present a
#             certificate: a second HAProxy on the load CPUs takes wrk's plain requests to
#             fapigate's TLS listener with the client certificate, for /status alike); and
#             fapigate's /status against the Pingora proxy, and the Pingora proxy against
#             HAProxy forwarding without a check (the floor of each core). Pairs as LOAD says
#   signed    GET /signed (sign_response, RFC 9421 ed25519) against GET /plain, together or
#             alternately (LOAD below)
#   log       GET /status (auth = "none") on a fapigate writing its JSON access log (level
#             info, to a file) against the same on one that does not (level warn), together
#             or alternately (LOAD): the access line's CPU cost per request
#   reload    one wrk run on GET /status; meanwhile a route is appended to the configuration
#             and fapigate gets SIGHUP. PASS: no socket error, no non-2xx, the new route answers
#   all       the five, in that order, with one set of servers
#
# Environment:
#   DURATION=10s         length of each measured wrk run (at most 10s: the machine is shared)
#   ROUNDS=2             measured rounds per scenario (each round runs every target once)
#   CONNECTIONS=16       wrk connections (one wrk thread)
#   WARMUP=1s            unrecorded wrk run per target before the first round ("0" to skip)
#   BENCH_THREADS=1      worker threads of both proxies
#   DPOP_PROOFS=200000   proofs signed before each measured run with DPoP (must outlast DURATION)
#   RELOAD_DURATION=10s  the reload scenario's wrk run;  RELOAD_AT=3  seconds in, the reload
#   LOAD=together        both targets of a pair are loaded at the same time, their proxies
#                        pinned to one CPU and wrk and the upstream to the others, so that both
#                        meet the same neighbours and share that CPU fairly: each round's ratio
#                        compares like with like (the default; a second fapigate then serves
#                        /plain and /status, so that each target's CPU is its own process's).
#                        alternate: one target after the other, unpinned. reload always
#                        alternates. On a shared VM alternate pairs ranged 0.65 to 1.30,
#                        together rounds within a few percent.
#   RATE=                requests/s offered to each target (unset: as many as it serves). Each
#                        wrk connection then pauses CONNECTIONS/RATE s after every response
#                        (bench/pace.lua), so both targets of a pair see the same offered load
#                        below their capacity: latency is then service time, not the queue a
#                        saturating closed loop builds (whose p99 only mirrors req/s), and CPU
#                        per request is compared at one request rate
#   LOG_LEVEL=warn       the gateways' [log] level in every scenario but log; info runs them as
#                        an operator would, writing the JSON access log to a file
#   IDLE_POLL_NS=        unset: the machine's idle behaviour as it is. N: for the run, an idle
#                        vCPU polls N ns before it halts (the cpuidle haltpoll driver's
#                        guest_halt_poll_ns, put back on exit; needs root). On loopback in a VM
#                        a proxy's write to the upstream (and to wrk) wakes a process whose vCPU
#                        may have halted, and the kernel charges the IPI that wakes it to the
#                        proxy: more the longer a target holds a request before it forwards it
#                        (a signature check), less for auth = "none". Across a network to
#                        another host that wake-up does not happen. 200000 makes it the same
#                        for every target; the output's first line says which was measured
#   SKIP_BUILD=1         use the binaries already in target/release
#   COUNT=time           time: wrk throughput, latency and CPU time (the default)
#                        instructions: the proxies run under valgrind's callgrind with its cache
#                        simulation, and each target's work per request is counted (instructions,
#                        L1 and last-level cache misses, estimated cycles). Deterministic: the
#                        figures do not move with the neighbours' load. One round, scenarios
#                        baseline and signed only; needs valgrind.
#   KEEP_TMP=1           keep the temporary folder (configuration, keys, logs, wrk outputs)
#
# Needs: cargo, openssl, curl, wrk; for dpop haproxy (2.5 or later, for jwt_verify), python3
# (the introspection endpoint) and redis-server. Everything listens on 127.0.0.1 only, and every process
# started here is stopped on exit.
set -euo pipefail

SCENARIO=${1:-${SCENARIO:-baseline}}
DURATION_SET=${DURATION:-}
WARMUP_SET=${WARMUP:-}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-1s}
BENCH_THREADS=${BENCH_THREADS:-1}
DPOP_PROOFS=${DPOP_PROOFS:-200000}
RELOAD_DURATION=${RELOAD_DURATION:-10s}
RELOAD_AT=${RELOAD_AT:-3}
COUNT=${COUNT:-time}
LOAD=${LOAD:-together}
LOG_LEVEL=${LOG_LEVEL:-warn}
RATE=${RATE:-}
export BENCH_THREADS

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/release

die() { echo "load.sh: $*" >&2; exit 1; }
# A pause left in the environment must not pace a run that did not ask for one.
unset WRK_PAUSE_MS
if [[ -n $RATE ]]; then
    [[ $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE: requests per second, a whole number"
    # The pause per connection, whole milliseconds (wrk's timer unit).
    WRK_PAUSE_MS=$(( (CONNECTIONS * 1000 + RATE / 2) / RATE ))
    (( WRK_PAUSE_MS > 0 )) || die "RATE $RATE with $CONNECTIONS connections: under 1 ms between requests; lower RATE or raise CONNECTIONS"
    export WRK_PAUSE_MS
fi

case $SCENARIO in
    baseline | dpop | signed | log | reload | all) ;;
    *) die "unknown scenario \"$SCENARIO\" (baseline, dpop, signed, log, reload, all)" ;;
esac
want() { [[ $SCENARIO == all || $SCENARIO == "$1" ]]; }

case $COUNT in
    time) ;;
    instructions)
        case $SCENARIO in
            baseline | signed) ;;
            all) SCENARIO=baseline+signed ;;
            *) die "COUNT=instructions counts the baseline and signed scenarios only" ;;
        esac
        want() { [[ $SCENARIO == *"$1"* ]]; }
        for tool in valgrind callgrind_control; do
            command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install valgrind)"
        done
        # Counts do not depend on the run's length or repetition: one short round.
        ROUNDS=1
        DURATION=${DURATION_SET:-5s}
        WARMUP=${WARMUP_SET:-2s}
        ;;
    *) die "COUNT must be time or instructions" ;;
esac
case $LOAD in
    together | alternate) ;;
    *) die "LOAD must be together or alternate" ;;
esac
# Counting needs no shared CPU (and one callgrind at a time is slow enough).
[[ $COUNT == time ]] || LOAD=alternate
# The CPUs this script may use (a container may allow, say, 2-3 only), one per line.
allowed_cpus=$(awk '/^Cpus_allowed_list:/ {
    n = split($2, parts, ",")
    for (i = 1; i <= n; i++) {
        if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) print c } else print r[1]
    } }' /proc/self/status 2>/dev/null || true)
[[ -n $allowed_cpus ]] || allowed_cpus=$(seq 0 $(( $(nproc) - 1 )))
if [[ $LOAD == together ]] && (( $(wc -l <<<"$allowed_cpus") < 2 )); then
    echo "load.sh: one CPU: LOAD=alternate" >&2
    LOAD=alternate
fi
if [[ $LOAD == together ]]; then
    command -v taskset >/dev/null || die "taskset is required for LOAD=together (Debian: util-linux)"
    proxy_cpu=$(tail -n 1 <<<"$allowed_cpus")
    load_cpus=$(head -n -1 <<<"$allowed_cpus" | paste -sd, -)
fi
# pinned ROLE: the command prefix for a proxy (ROLE proxy) or a load process (ROLE load).
pinned() {
    [[ $LOAD == together ]] || return 0
    if [[ $1 == proxy ]]; then echo "taskset -c $proxy_cpu"; else echo "taskset -c $load_cpus"; fi
}

for tool in openssl curl wrk; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install $tool)"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $LOG_LEVEL =~ ^(error|warn|info|debug)$ ]] || die "LOG_LEVEL must be error, warn, info or debug"
! want log || [[ $LOG_LEVEL == warn ]] || die "the log scenario compares level info with warn: leave LOG_LEVEL unset"
[[ $BENCH_THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer"
[[ $DPOP_PROOFS =~ ^[1-9][0-9]*$ ]] || die "DPOP_PROOFS must be a positive integer"
[[ $RELOAD_AT =~ ^[1-9][0-9]*$ ]] || die "RELOAD_AT must be a positive number of seconds"

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
[[ $(seconds "$RELOAD_DURATION") =~ ^[0-9]+$ ]] || die "RELOAD_DURATION must look like 10s"
(( RELOAD_AT < $(seconds "$RELOAD_DURATION") )) || die "RELOAD_AT must fall inside RELOAD_DURATION"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== building (release)" >&2
    (cd "$repo" && cargo build --release --bin fapigate \
        --example baseline-proxy --example bench-upstream --example gen-dpop) >&2
fi
for exe in "$bin/fapigate" "$bin/examples/baseline-proxy" "$bin/examples/bench-upstream" \
    "$bin/examples/gen-dpop"; do
    [[ -x $exe ]] || die "$exe is missing: build first"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fapigate-bench.XXXXXX")
pids=()
pingora_pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Pingora servers get SIGINT, their fast shutdown (SIGTERM is the graceful one, which makes
    # the baseline proxy, built with Pingora's defaults, linger 5 minutes); the others SIGTERM
    # (background jobs of a script ignore SIGINT).
    for pid in "${pids[@]}"; do
        if [[ " ${pingora_pids[*]} " == *" $pid "* ]]; then
            kill -INT "$pid" 2>/dev/null || true
        else
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${idle_poll_was:-} ]]; then
        echo "$idle_poll_was" >"$idle_poll_knob" 2>/dev/null \
            || echo "load.sh: could not put $idle_poll_knob back to $idle_poll_was" >&2
    fi
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

idle_poll_knob=/sys/module/haltpoll/parameters/guest_halt_poll_ns
idle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo "unknown")
if [[ -r $idle_poll_knob ]]; then
    idle="$idle, guest_halt_poll_ns $(<"$idle_poll_knob")"
fi
if [[ -n ${IDLE_POLL_NS:-} ]]; then
    [[ $IDLE_POLL_NS =~ ^[0-9]+$ ]] || die "IDLE_POLL_NS must be a number of nanoseconds"
    [[ -w $idle_poll_knob ]] || die "IDLE_POLL_NS needs the cpuidle haltpoll driver and root ($idle_poll_knob)"
    idle_poll_was=$(<"$idle_poll_knob")
    echo "$IDLE_POLL_NS" >"$idle_poll_knob" || die "could not write $idle_poll_knob"
    idle="$idle, set to $IDLE_POLL_NS for this run"
fi

# free_port NAME: a free port below the ephemeral range (so wrk's own outgoing sockets cannot
# take it) into the variable NAME. Not a command substitution: in a subshell used_ports would not
# grow, and two servers not yet listening could be given the same port.
used_ports=" "
free_port() {
    local port i
    for i in $(seq 1 200); do
        port=$(( 20000 + RANDOM % 12000 ))
        [[ $used_ports == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports+="$port "
            printf -v "$1" '%s' "$port"
            return
        fi
    done
    die "no free port found"
}
free_port up_port
free_port base_port
free_port tls_port
free_port plain_port
free_port admin_port
public_url="https://127.0.0.1:$tls_port"
gate="http://127.0.0.1:$plain_port"
issuer="https://as.bench.example"

# Self-signed EC P-256 server certificate (the TLS listener is required, but not measured).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$tmp/server.key" -out "$tmp/server.crt" 2>"$tmp/openssl.log" \
    || { cat "$tmp/openssl.log" >&2; die "openssl failed"; }
chmod 600 "$tmp/server.key"

cat >"$tmp/fapigate.toml" <<EOF
[listener]
addr = "127.0.0.1:$tls_port"
public_url = "$public_url"
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
level = "$LOG_LEVEL"

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

if want dpop; then
    # One issuer whose keys are a file (nothing fetched), one ES256 at+jwt bound to a DPoP key.
    "$bin/examples/gen-dpop" keys "$tmp/dpop" "$issuer" "$public_url" 2>>"$tmp/gen-dpop.log" \
        || { cat "$tmp/gen-dpop.log" >&2; die "gen-dpop keys failed"; }
    # The TPP's client certificate (signed by a CA the listener trusts) and a JWT bound to it.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=bench TPP CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign" \
        -keyout "$tmp/client-ca.key" -out "$tmp/client-ca.crt" 2>>"$tmp/openssl.log" \
        && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=bench TPP" -keyout "$tmp/client.key" -out "$tmp/client.csr" 2>>"$tmp/openssl.log" \
        && printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
            >"$tmp/client.ext" \
        && openssl x509 -req -in "$tmp/client.csr" -CA "$tmp/client-ca.crt" -CAkey "$tmp/client-ca.key" \
            -CAcreateserial -days 2 -extfile "$tmp/client.ext" -out "$tmp/client.crt" 2>>"$tmp/openssl.log" \
        && openssl x509 -in "$tmp/client.crt" -outform DER -out "$tmp/client.der" 2>>"$tmp/openssl.log" \
        || { cat "$tmp/openssl.log" >&2; die "openssl could not make the client certificate"; }
    cat "$tmp/client.crt" "$tmp/client.key" >"$tmp/client.pem"
    chmod 600 "$tmp/client.key" "$tmp/client-ca.key" "$tmp/client.pem"
    "$bin/examples/gen-dpop" mtls-token "$tmp/dpop" "$tmp/client.der" 2>>"$tmp/gen-dpop.log" \
        || { cat "$tmp/gen-dpop.log" >&2; die "gen-dpop mtls-token failed"; }
    sed -i "s|^client_cert = \"off\"\$|client_cert = \"request\"\nclient_ca = \"$tmp/client-ca.crt\"|" \
        "$tmp/fapigate.toml"
    grep -q '^client_cert = "request"$' "$tmp/fapigate.toml" || die "dpop: client certificates not asked for"
    free_port intro_port
    openssl rand -hex 32 >"$tmp/dpop/introspection-secret"
    chmod 600 "$tmp/dpop/introspection-secret"
    cat >>"$tmp/fapigate.toml" <<EOF

# One DPoP key sends every proof here, so it may hold every record (a real client is held to
# its share: beyond it, 429).
[state]
replay_entries_per_key = 1000000

[[issuer]]
id = "bench-as"
issuer = "$issuer"
audience = "$public_url"
jwks_file = "$tmp/dpop/jwks.json"

# Opaque tokens are introspected here (bench/load.sh's endpoint answers every call alike);
# the answer is cached, so a measured run makes at most one call.
[issuer.introspection]
endpoint = "http://127.0.0.1:$intro_port/introspect"
client_id = "fapigate-bench"
auth = "client_secret_basic"
secret_file = "$tmp/dpop/introspection-secret"
signed_response = false

[[route]]
id = "accounts"
methods = ["GET"]
path = "/accounts"
upstream = "bench"
auth = "token"
scopes = ["accounts"]
EOF
fi

if want signed; then
    openssl genpkey -algorithm ed25519 -out "$tmp/signing.pem" 2>>"$tmp/openssl.log" \
        || { cat "$tmp/openssl.log" >&2; die "openssl genpkey ed25519 failed"; }
    chmod 600 "$tmp/signing.pem"
    cat >>"$tmp/fapigate.toml" <<EOF

[response_signing]
format = "http-signature"
key = "$tmp/signing.pem"
key_id = "bench-rs-1"
alg = "ed25519"

[[route]]
id = "signed"
methods = ["GET"]
path = "/signed"
upstream = "bench"
auth = "none"
sign_response = true

[[route]]
id = "plain"
methods = ["GET"]
path = "/plain"
upstream = "bench"
auth = "none"
EOF
fi

"$bin/fapigate" check --config "$tmp/fapigate.toml" >&2 || die "fapigate refused the bench configuration"

# shellcheck disable=SC2046
$(pinned load) "$bin/examples/bench-upstream" "127.0.0.1:$up_port" >"$tmp/upstream.log" 2>&1 &
up_pid=$!
pids+=("$up_pid")
# COUNT=instructions: the two proxies under callgrind, counting only while a target is measured.
under() { # under NAME: the command prefix for a proxy
    if [[ $COUNT == instructions ]]; then
        echo "valgrind --tool=callgrind --cache-sim=yes --instr-atstart=no --callgrind-out-file=$tmp/cg-$1.out"
    fi
}
# shellcheck disable=SC2046
$(pinned proxy) $(under baseline) "$bin/examples/baseline-proxy" "127.0.0.1:$base_port" "127.0.0.1:$up_port" >"$tmp/baseline.log" 2>&1 &
base_pid=$!
pids+=("$base_pid")
pingora_pids+=("$base_pid")
# shellcheck disable=SC2046
$(pinned proxy) $(under fapigate) "$bin/fapigate" run --config "$tmp/fapigate.toml" >"$tmp/fapigate.log" 2>&1 &
gate_pid=$!
pids+=("$gate_pid")
pingora_pids+=("$gate_pid")

# gateway_copy NAME: fapigate.toml with fresh listener ports, as $tmp/NAME.toml; its plain,
# admin and TLS ports in copy_plain_port, copy_admin_port and copy_tls_port.
gateway_copy() {
    free_port copy_plain_port
    free_port copy_admin_port
    free_port copy_tls_port
    sed -e "s/127.0.0.1:$plain_port\"/127.0.0.1:$copy_plain_port\"/" \
        -e "s/127.0.0.1:$admin_port\"/127.0.0.1:$copy_admin_port\"/" \
        -e "s/^addr = \"127.0.0.1:$tls_port\"/addr = \"127.0.0.1:$copy_tls_port\"/" \
        "$tmp/fapigate.toml" >"$tmp/$1.toml"
}

# signed and dpop, LOAD=together: a second fapigate, same configuration, serves /plain and
# /status (one worker thread serving both targets would share its turns between them, not its
# CPU, and their CPU could not be told apart).
if { want signed || want dpop; } && [[ $LOAD == together ]]; then
    gateway_copy fapigate-b
    plain_b_port=$copy_plain_port
    admin_b_port=$copy_admin_port
    tls_b_port=$copy_tls_port
    # shellcheck disable=SC2046
    $(pinned proxy) "$bin/fapigate" run --config "$tmp/fapigate-b.toml" >"$tmp/fapigate-b.log" 2>&1 &
    gate_b_pid=$!
    pids+=("$gate_b_pid")
    pingora_pids+=("$gate_b_pid")
fi

# log: a second fapigate, the same configuration but for the level, writes access lines.
if want log; then
    gateway_copy fapigate-log
    log_plain_port=$copy_plain_port
    log_admin_port=$copy_admin_port
    sed -i 's/^level = "warn"$/level = "info"/' "$tmp/fapigate-log.toml"
    grep -q '^level = "info"$' "$tmp/fapigate-log.toml" || die "log: the level was not raised"
    # shellcheck disable=SC2046
    $(pinned proxy) "$bin/fapigate" run --config "$tmp/fapigate-log.toml" >"$tmp/fapigate-log.log" 2>&1 &
    gate_log_pid=$!
    pids+=("$gate_log_pid")
    pingora_pids+=("$gate_log_pid")
fi

# dpop also runs against a second fapigate that keeps replay records in a real Redis.
if want dpop; then
    command -v redis-server >/dev/null || die "redis-server is needed for the dpop scenario"
    free_port redis_port
    # shellcheck disable=SC2046
    $(pinned load) redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    gateway_copy fapigate-redis
    plain2_port=$copy_plain_port
    admin2_port=$copy_admin_port
    sed -i "s|^\[state\]\$|[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:$redis_port/0\"|" \
        "$tmp/fapigate-redis.toml"
    # shellcheck disable=SC2046
    $(pinned proxy) "$bin/fapigate" run --config "$tmp/fapigate-redis.toml" >"$tmp/fapigate-redis.log" 2>&1 &
    gate2_pid=$!
    pids+=("$gate2_pid")
    pingora_pids+=("$gate2_pid")
fi

# dpop: HAProxy as the reference a bank already runs, checking the access token itself
# (ES256 signature with the issuer's public key, and exp) in front of the same upstream.
if want dpop; then
    command -v haproxy >/dev/null || die "haproxy is needed for the dpop scenario (Debian: apt-get install haproxy)"
    openssl pkey -inform DER -in "$tmp/dpop/as.pk8" -pubout -out "$tmp/dpop/as.pub.pem" \
        2>>"$tmp/openssl.log" || { cat "$tmp/openssl.log" >&2; die "openssl could not export the AS key"; }
    free_port haproxy_port
    free_port haproxy_plain_port
    cat >"$tmp/haproxy.cfg" <<EOF
global
    nbthread $BENCH_THREADS
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend jwt
    bind 127.0.0.1:$haproxy_port
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless { var(txn.alg) -m str ES256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$tmp/dpop/as.pub.pem") -m int 1 }
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    default_backend upstream
# The floor: the same HAProxy forwarding without a check, against the Pingora proxy.
frontend plain
    bind 127.0.0.1:$haproxy_plain_port
    default_backend upstream
backend upstream
    http-reuse always
    server bench 127.0.0.1:$up_port
EOF
    haproxy -c -q -f "$tmp/haproxy.cfg" >&2 || die "haproxy refused the bench configuration"
    # shellcheck disable=SC2046
    $(pinned proxy) haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
    haproxy_pid=$!
    pids+=("$haproxy_pid")

    # The TPP side of mTLS, on the load CPUs (not measured): wrk's plain requests go on over
    # kept-alive TLS connections that present the client certificate, to fapigate's TLS
    # listener (mtls) and to the second fapigate's (status-tls, when there is one).
    free_port origin_a_port
    free_port origin_b_port
    cat >"$tmp/haproxy-tpp.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tpp_a
    bind 127.0.0.1:$origin_a_port
    default_backend gate_a
frontend tpp_b
    bind 127.0.0.1:$origin_b_port
    default_backend gate_b
backend gate_a
    http-reuse always
    server a 127.0.0.1:$tls_port ssl verify none crt $tmp/client.pem
backend gate_b
    http-reuse always
    server b 127.0.0.1:${tls_b_port:-$tls_port} ssl verify none crt $tmp/client.pem
EOF
    haproxy -c -q -f "$tmp/haproxy-tpp.cfg" >&2 || die "haproxy refused the TPP-side configuration"
    # shellcheck disable=SC2046
    $(pinned load) haproxy -db -f "$tmp/haproxy-tpp.cfg" >"$tmp/haproxy-tpp.log" 2>&1 &
    pids+=("$!")

    # The AS's introspection endpoint: every call gets the answer gen-dpop wrote.
    command -v python3 >/dev/null || die "python3 is needed for the dpop scenario's introspection endpoint"
    cat >"$tmp/introspect.py" <<'EOF'
import http.server, sys
answer = open(sys.argv[2], "rb").read()
class Introspection(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
    def do_GET(self):
        # Readiness only: load.sh waits for this before its probes.
        self.send_response(200 if self.path == "/ready" else 404)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Introspection).serve_forever()
EOF
    # shellcheck disable=SC2046
    $(pinned load) python3 "$tmp/introspect.py" "$intro_port" "$tmp/dpop/introspection.json" \
        >"$tmp/introspect.log" 2>&1 &
    intro_pid=$!
    pids+=("$intro_pid")
fi

# wait_for NAME PID URL: until URL answers 200, or fail showing NAME's log.
wait_for() {
    local name=$1 pid=$2 url=$3 i code
    local tries=150
    [[ $COUNT == time ]] || tries=1200 # a valgrind start takes a while
    for i in $(seq 1 "$tries"); do
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
    die "$name not ready after $(( tries / 10 )) s ($url last answered ${code:-nothing})"
}
wait_for upstream "$up_pid" "http://127.0.0.1:$up_port/status"
wait_for baseline "$base_pid" "http://127.0.0.1:$base_port/status"
wait_for fapigate "$gate_pid" "http://127.0.0.1:$admin_port/readyz"
wait_for fapigate "$gate_pid" "$gate/status"
if want dpop; then
    wait_for fapigate-redis "$gate2_pid" "http://127.0.0.1:$admin2_port/readyz"
    # The opaque probe's first use is introspected: a python that is not listening yet is a 503.
    wait_for introspect "$intro_pid" "http://127.0.0.1:$intro_port/ready"
    # HAProxy refuses a request without the token: wait for its port (probed with it later).
    for i in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$haproxy_port") 2>/dev/null && break
        kill -0 "$haproxy_pid" 2>/dev/null || { cat "$tmp/haproxy.log" >&2; die "haproxy exited during startup"; }
        sleep 0.1
    done
fi
if [[ -n ${gate_b_pid:-} ]]; then
    wait_for fapigate-b "$gate_b_pid" "http://127.0.0.1:$admin_b_port/readyz"
fi
if [[ -n ${gate_log_pid:-} ]]; then
    wait_for fapigate-log "$gate_log_pid" "http://127.0.0.1:$log_admin_port/readyz"
fi

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

# Counts from a wrk output: non-2xx/3xx responses, and socket errors (connect+read+write+timeout).
non2xx_of() { awk '/Non-2xx or 3xx responses:/ { print $NF; found = 1 } END { if (!found) print 0 }' <<<"$1"; }
sockerr_of() {
    awk -F'[ ,]+' '/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i } END { print s + 0 }' <<<"$1"
}

watchdog=$(( $(seconds "$DURATION") + 30 ))
(( $(seconds "$DURATION") <= 10 )) || echo "load.sh: warning: DURATION above 10s on a shared machine" >&2

# target NAME -> "PID PORT PATH KIND": the process whose CPU is measured, the port wrk loads,
# and the kind of request (see wrk_run).
target() {
    case $1 in
        baseline) echo "$base_pid $base_port /status -" ;;
        fapigate) echo "$gate_pid $plain_port /status -" ;;
        status)
            if [[ -n ${gate_b_pid:-} ]]; then
                echo "$gate_b_pid $plain_b_port /status -"
            else
                echo "$gate_pid $plain_port /status -"
            fi
            ;;
        dpop) echo "$gate_pid $plain_port /accounts dpop" ;;
        opaque) echo "$gate_pid $plain_port /accounts opaque" ;;
        dpop-redis) echo "$gate2_pid $plain2_port /accounts dpop" ;;
        haproxy-jwt) echo "$haproxy_pid $haproxy_port /accounts bearer" ;;
        haproxy-plain) echo "$haproxy_pid $haproxy_plain_port /status -" ;;
        # wrk -> the TPP-side HAProxy -> TLS with the client certificate -> fapigate
        mtls) echo "$gate_pid $origin_a_port /accounts mtls" ;;
        status-tls) echo "${gate_b_pid:-$gate_pid} $origin_b_port /status -" ;;
        signed) echo "$gate_pid $plain_port /signed -" ;;
        logged) echo "$gate_log_pid $log_plain_port /status -" ;;
        plain)
            if [[ -n ${gate_b_pid:-} ]]; then
                echo "$gate_b_pid $plain_b_port /plain -"
            else
                echo "$gate_pid $plain_port /plain -"
            fi
            ;;
        *) die "no target $1" ;;
    esac
}

# The access token and the proof file of a kind of request with DPoP (dpop: the JWT, opaque:
# the opaque token; their proofs differ in ath).
token_file() { if [[ $1 == opaque ]]; then echo "$tmp/dpop/opaque"; else echo "$tmp/dpop/token"; fi; }
proofs_file() { echo "$tmp/dpop/proofs-$1.txt"; }
with_proofs() { [[ $1 == dpop || $1 == opaque ]]; }

# Before every run with DPoP: proofs signed now (iat = now, within dpop_proof_max_age).
fresh_proofs() { # fresh_proofs KIND COUNT
    "$bin/examples/gen-dpop" proofs "$tmp/dpop" "$public_url/accounts" "$2" "$(proofs_file "$1")" \
        "$(token_file "$1")" 2>>"$tmp/gen-dpop.log" \
        || { cat "$tmp/gen-dpop.log" >&2; die "gen-dpop proofs failed"; }
}

rows=()
declare -A rps p50 p99 cpu bad events dumps
# count_events PID KEY REQUESTS (COUNT=instructions): the counts callgrind gathered since the
# last dump, per request: instructions, I1 misses, D1 misses, last-level misses, and the
# estimated cycles KCachegrind uses (Ir + 10 x L1 misses + 100 x last-level misses).
count_events() {
    local pid=$1 key=$2 n=$3 proc=fapigate dump i
    [[ $pid != "$base_pid" ]] || proc=baseline
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$key" "$pid" >/dev/null
    # Callgrind numbers its dumps 1, 2, ... per process; the last line it writes is "totals:".
    dumps[$proc]=$(( ${dumps[$proc]:-0} + 1 ))
    dump="$tmp/cg-$proc.out.${dumps[$proc]}"
    for i in $(seq 1 300); do
        grep -q '^totals:' "$dump" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '^totals:' "$dump" 2>/dev/null || die "callgrind wrote no counts for $key ($dump)"
    events[$key]=$(awk -v n="$n" '
        /^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
        /^totals:/ { for (i = 2; i <= NF; i++) v[name[i]] = $i / n }
        END {
            l1 = v["I1mr"] + v["D1mr"] + v["D1mw"]; ll = v["ILmr"] + v["DLmr"] + v["DLmw"]
            printf "%.0f %.0f %.0f %.1f %.0f", v["Ir"], v["I1mr"], v["D1mr"] + v["D1mw"], ll,
                v["Ir"] + 10 * l1 + 100 * ll
        }' "$dump")
}
run=0
# measure SCENARIO NAME: one recorded wrk run of target NAME; results under "SCENARIO/NAME".
# wrk_run PORT PATH KIND [DURATION]: one wrk run, its output on stdout. KIND: - (no
# credential), bearer (the DPoP-bound JWT as a Bearer token, for HAProxy), mtls (the
# certificate-bound JWT as a Bearer token), dpop or opaque (that token with a fresh proof per
# request, bench/dpop.lua). Run in a subshell (the caller's $(...) or &), which it replaces, so
# that a background run's $! is wrk's timeout.
wrk_run() {
    local port=$1 path=$2 kind=$3 url="http://127.0.0.1:$1$2"
    local -a args=(-t1 -c"$CONNECTIONS" -d"${4:-$DURATION}" --latency)
    case $kind in
        -) ;;
        bearer) args+=(-H "Authorization: Bearer $(<"$tmp/dpop/token")") ;;
        mtls) args+=(-H "Authorization: Bearer $(<"$tmp/dpop/mtls-token")") ;;
        dpop | opaque)
            # shellcheck disable=SC2046
            exec $(pinned load) timeout "$watchdog" wrk "${args[@]}" -s "$repo/bench/dpop.lua" \
                "$url" -- "$(proofs_file "$kind")" "$(token_file "$kind")" 1
            ;;
        *) die "no request kind $kind" ;;
    esac
    # bench/dpop.lua paces itself; the other kinds need bench/pace.lua for it.
    [[ -z $RATE ]] || args+=(-s "$repo/bench/pace.lua")
    # shellcheck disable=SC2046
    exec $(pinned load) timeout "$watchdog" wrk "${args[@]}" "$url"
}

# measure SCENARIO NAME: one recorded wrk run of target NAME; results under "SCENARIO/NAME".
measure() {
    local scenario=$1 name=$2 pid port path lua out before after
    read -r pid port path lua <<<"$(target "$name")"
    run=$((run + 1))
    echo "== run $run: $scenario: $name ($DURATION, GET $path)" >&2
    if with_proofs "$lua"; then fresh_proofs "$lua" "$DPOP_PROOFS"; fi
    [[ $COUNT == time ]] || callgrind_control -i on "$pid" >/dev/null
    before=$(cpu_ticks "$pid")
    out=$(wrk_run "$port" "$path" "$lua") || { echo "$out" >&2; die "wrk failed against $name"; }
    after=$(cpu_ticks "$pid")
    record "$scenario" "$name" "$pid" "$lua" "$out" $((after - before))
}

# measure_together SCENARIO A B (LOAD=together): A and B loaded at the same time, each by its
# own wrk; their proxies share one CPU.
measure_together() {
    local scenario=$1 a=$2 b=$3 pid_a port_a path_a kind_a pid_b port_b path_b kind_b
    local a0 b0 a1 b1 wrk_a wrk_b t0 t1 busy
    read -r pid_a port_a path_a kind_a <<<"$(target "$a")"
    read -r pid_b port_b path_b kind_b <<<"$(target "$b")"
    [[ $pid_a != "$pid_b" ]] || die "$a and $b are served by one process: their CPU cannot be told apart"
    if with_proofs "$kind_a"; then fresh_proofs "$kind_a" "$DPOP_PROOFS"; fi
    if with_proofs "$kind_b" && [[ $kind_b != "$kind_a" ]]; then fresh_proofs "$kind_b" "$DPOP_PROOFS"; fi
    # Said once the proofs are signed: bench/profile.sh starts sampling a second after it.
    echo "== runs $((run + 1)), $((run + 2)): $scenario: $a and $b together ($DURATION)" >&2
    a0=$(cpu_ticks "$pid_a")
    b0=$(cpu_ticks "$pid_b")
    t0=$(date +%s.%N)
    wrk_run "$port_a" "$path_a" "$kind_a" >"$tmp/together-a.txt" 2>&1 &
    wrk_a=$!
    wrk_run "$port_b" "$path_b" "$kind_b" >"$tmp/together-b.txt" 2>&1 &
    wrk_b=$!
    pids+=("$wrk_a" "$wrk_b")
    wait "$wrk_a" || { cat "$tmp/together-a.txt" >&2; die "wrk failed against $a"; }
    wait "$wrk_b" || { cat "$tmp/together-b.txt" >&2; die "wrk failed against $b"; }
    a1=$(cpu_ticks "$pid_a")
    b1=$(cpu_ticks "$pid_b")
    t1=$(date +%s.%N)
    # The ratio is one of costs only while the proxies' CPU is the bottleneck.
    busy=$(awk -v t=$(( a1 - a0 + b1 - b0 )) -v hz="$clk_tck" -v s="$t0" -v e="$t1" \
        'BEGIN { printf "%.0f", 100 * t / hz / (e - s) }')
    if [[ -z $RATE ]] && (( busy < 90 )); then
        echo "load.sh: warning: the proxies used only $busy % of CPU $proxy_cpu: the load side may be the bottleneck, and the ratio is not one of costs" >&2
    fi
    run=$((run + 1))
    record "$scenario" "$a" "$pid_a" "$kind_a" "$(<"$tmp/together-a.txt")" $((a1 - a0))
    run=$((run + 1))
    record "$scenario" "$b" "$pid_b" "$kind_b" "$(<"$tmp/together-b.txt")" $((b1 - b0))
}

# measure_pair SCENARIO A B: one round of A and B, as LOAD says.
measure_pair() {
    if [[ $LOAD == together ]]; then
        measure_together "$@"
    else
        measure "$1" "$2"
        measure "$1" "$3"
    fi
}

# record SCENARIO NAME PID LUA WRK_OUTPUT CPU_TICKS: the run's figures under "SCENARIO/NAME".
record() {
    local scenario=$1 name=$2 pid=$3 lua=$4 out=$5 ticks=$6 key="$1/$2" reqs r l50 l99 n2 se c
    echo "$out" >"$tmp/wrk-$run-${scenario}-$name.txt"
    reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
    r=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    l50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    l99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    n2=$(non2xx_of "$out")
    se=$(sockerr_of "$out")
    [[ -n $reqs && -n $r && $reqs -gt 0 ]] || { echo "$out" >&2; die "could not parse wrk output"; }
    c=$(awk -v t="$ticks" -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    [[ $COUNT == time ]] || count_events "$pid" "$key" "$reqs"

    rps[$key]+="$r "
    p50[$key]+="$l50 "
    p99[$key]+="$l99 "
    cpu[$key]+="$c "
    bad[$key]=$(( ${bad[$key]:-0} + n2 + se ))
    local note=""
    if with_proofs "$lua"; then
        note=$(awk '/^dpop proofs used:/ { sub(/^dpop proofs /, ""); print }' <<<"$out")
        note=" ($note)"
    fi
    rows+=("| $run | $scenario | $name | $r | $l50 | $l99 | $c | $n2 | $se |")
    if (( n2 + se > 0 )); then
        echo "load.sh: warning: $name: $n2 non-2xx, $se socket errors$note" >&2
    fi
    if [[ $note == *"exhausted: "[1-9]* ]]; then
        echo "load.sh: warning: the proof file ran out$note: raise DPOP_PROOFS or shorten DURATION" >&2
    fi
}

warm() { # warm NAME...: unrecorded short runs
    local name pid port path lua
    [[ $WARMUP != 0 ]] || return 0
    echo "== warm-up ($WARMUP each: $*)" >&2
    for name in "$@"; do
        read -r pid port path lua <<<"$(target "$name")"
        if with_proofs "$lua"; then fresh_proofs "$lua" 50000; fi
        (wrk_run "$port" "$path" "$lua" "$WARMUP") >/dev/null || die "warm-up failed against $name"
    done
}

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

summary=()
say() { summary+=("$*"); }
medians() { # medians SCENARIO NAME...
    local s=$1 name
    shift
    say "| median | req/s | p50 µs | p99 µs | CPU µs/req | non-2xx + socket errors |"
    say "|---|---|---|---|---|---|"
    for name in "$@"; do
        say "| $name | $(median "${rps[$s/$name]}") | $(median "${p50[$s/$name]}") | $(median "${p99[$s/$name]}") | $(median "${cpu[$s/$name]}") | ${bad[$s/$name]} |"
    done
}
# Median of the per-round ratios A/B: runs of one round are adjacent in time, so a slow
# stretch of this shared machine weighs on both sides of a pair alike.
paired() { awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); k = 0
    for (i = 1; i <= n; i++) if (y[i] > 0) r[++k] = x[i] / y[i]
    if (k == 0) { print "n/a"; exit }
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
    printf "%.2f", (k % 2) ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2 }'; }
# Median of the per-round differences A - B.
paired_diff() { awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); m = split(b, y, " "); k = 0
    for (i = 1; i <= n && i <= m; i++) r[++k] = x[i] - y[i]
    if (k == 0) { print "n/a"; exit }
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
    printf "%.1f", (k % 2) ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2 }'; }
# above SCENARIO A B: A's CPU per request above B's, from the medians and paired.
above() {
    local s=$1 a=$2 b=$3
    echo "$(awk -v x="$(median "${cpu[$s/$a]}")" -v y="$(median "${cpu[$s/$b]}")" \
        'BEGIN { printf "%.1f", x - y }') µs/req (paired: $(paired_diff "${cpu[$s/$a]}" "${cpu[$s/$b]}"))"
}
ratio_row() { # ratio_row SCENARIO A B: A/B of every median
    local s=$1 a=$2 b=$3
    say "| $a/$b | $(ratio "$(median "${rps[$s/$a]}")" "$(median "${rps[$s/$b]}")") \
| $(ratio "$(median "${p50[$s/$a]}")" "$(median "${p50[$s/$b]}")") \
| $(ratio "$(median "${p99[$s/$a]}")" "$(median "${p99[$s/$b]}")") \
| $(ratio "$(median "${cpu[$s/$a]}")" "$(median "${cpu[$s/$b]}")") | |"
    say "| $a/$b, paired | $(paired "${rps[$s/$a]}" "${rps[$s/$b]}") \
| $(paired "${p50[$s/$a]}" "${p50[$s/$b]}") \
| $(paired "${p99[$s/$a]}" "${p99[$s/$b]}") \
| $(paired "${cpu[$s/$a]}" "${cpu[$s/$b]}") | |"
}

counts() { # counts SCENARIO A B (COUNT=instructions): per-request counts of A and B, and A/B
    local s=$1 a=$2 b=$3 name ir i1 d1 ll est
    say "| per request | instructions | I1 misses | D1 misses | LL misses | est. cycles |"
    say "|---|---|---|---|---|---|"
    for name in "$a" "$b"; do
        read -r ir i1 d1 ll est <<<"${events[$s/$name]}"
        say "| $name | $ir | $i1 | $d1 | $ll | $est |"
    done
    local -a x y
    read -r -a x <<<"${events[$s/$a]}"
    read -r -a y <<<"${events[$s/$b]}"
    say "| $a/$b | $(ratio "${x[0]}" "${y[0]}") | $(ratio "${x[1]}" "${y[1]}") \
| $(ratio "${x[2]}" "${y[2]}") | $(ratio "${x[3]}" "${y[3]}") | $(ratio "${x[4]}" "${y[4]}") |"
}

curl_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }

# -------------------------------------------------------------------------------------- baseline
if want baseline; then
    warm baseline fapigate
    for round in $(seq 1 "$ROUNDS"); do
        measure_pair baseline baseline fapigate
    done
    say ""
    say "### baseline: GET /status, fapigate (auth none) vs Pingora proxy"
    say ""
    if [[ $COUNT == time ]]; then
        medians baseline baseline fapigate
        ratio_row baseline fapigate baseline
    else
        counts baseline fapigate baseline
    fi
fi

# ------------------------------------------------------------------------------------------ dpop
dpop_preflight() {
    # One proof, sent twice: the first must pass (else show why), the second must be a replay.
    local token headers code again
    fresh_proofs dpop 1
    token=$(<"$tmp/dpop/token")
    headers=$(curl -s -o /dev/null -D - --max-time 2 -H "Authorization: DPoP $token" \
        -H "DPoP: $(<"$(proofs_file dpop)")" "$gate/accounts" || true)
    code=$(awk 'NR == 1 { print $2 }' <<<"$headers")
    if [[ $code != 200 ]]; then
        echo "---- fapigate refused the DPoP probe: HTTP ${code:-nothing}" >&2
        grep -i '^www-authenticate:' <<<"$headers" >&2 || true
        die "dpop: the probe request was not admitted"
    fi
    again=$(curl_status -H "Authorization: DPoP $token" -H "DPoP: $(<"$(proofs_file dpop)")" "$gate/accounts")
    echo "== dpop probe: first use $code, replay $again" >&2
    [[ $again == 401 ]] || die "dpop: a replayed proof was answered $again, not 401"
    # The reference must really check the token: the same JWT passes, an altered one does not.
    code=$(curl_status -H "Authorization: Bearer $token" "http://127.0.0.1:$haproxy_port/accounts")
    again=$(curl_status -H "Authorization: Bearer ${token%??}AA" "http://127.0.0.1:$haproxy_port/accounts")
    echo "== haproxy jwt_verify probe: the token $code, an altered token $again" >&2
    [[ $code == 200 && $again == 401 ]] || { cat "$tmp/haproxy.log" >&2; die "haproxy: jwt_verify probe answered $code / $again, not 200 / 401"; }
    # The opaque token with a proof of its own passes (one introspection); its proof again is a replay.
    fresh_proofs opaque 1
    token=$(<"$tmp/dpop/opaque")
    code=$(curl_status -H "Authorization: DPoP $token" -H "DPoP: $(<"$(proofs_file opaque)")" "$gate/accounts")
    again=$(curl_status -H "Authorization: DPoP $token" -H "DPoP: $(<"$(proofs_file opaque)")" "$gate/accounts")
    echo "== opaque probe: first use $code, replay $again" >&2
    [[ $code == 200 && $again == 401 ]] || { cat "$tmp/introspect.log" >&2; die "opaque: the probe answered $code / $again, not 200 / 401"; }
    # The certificate-bound token passes over the certificate's connection, and nowhere else.
    token=$(<"$tmp/dpop/mtls-token")
    code=$(curl_status -H "Authorization: Bearer $token" "http://127.0.0.1:$origin_a_port/accounts")
    again=$(curl_status -H "Authorization: Bearer $token" "$gate/accounts")
    echo "== mtls probe: with the certificate $code, without $again" >&2
    [[ $code == 200 && $again == 401 ]] || { cat "$tmp/haproxy-tpp.log" >&2; die "mtls: the probe answered $code / $again, not 200 / 401"; }
    [[ $(curl_status "http://127.0.0.1:$origin_b_port/status") == 200 ]] || die "status-tls: /status did not answer"
}

if want dpop; then
    dpop_preflight
    warm baseline status dpop opaque haproxy-jwt haproxy-plain mtls status-tls
    for round in $(seq 1 "$ROUNDS"); do
        measure_pair dpop dpop status
        measure_pair dpop-ref dpop haproxy-jwt
        measure_pair opaque opaque status
        measure_pair mtls mtls status-tls
        measure_pair redis dpop-redis status
        measure_pair pingora status baseline
        measure_pair floor baseline haproxy-plain
    done
    say ""
    say "### dpop: GET /accounts (JWT at+jwt + fresh DPoP proof per request) vs GET /status (auth none)"
    say ""
    medians dpop status dpop
    ratio_row dpop dpop status
    say ""
    say "dpop CPU above auth none: $(above dpop dpop status) (target: one ES256 verification, criterion dpop/signature_only/ES256, + 20 µs)"
    say ""
    say "### dpop-ref: the DPoP route vs HAProxy jwt_verify (ES256 + exp) on the same JWT as a Bearer token"
    say ""
    medians dpop-ref haproxy-jwt dpop
    ratio_row dpop-ref dpop haproxy-jwt
    dpop_rps=$(paired "${rps[dpop-ref/dpop]}" "${rps[dpop-ref/haproxy-jwt]}")
    dpop_p99=$(paired "${p99[dpop-ref/dpop]}" "${p99[dpop-ref/haproxy-jwt]}")
    say ""
    say "dpop/haproxy-jwt req/s (paired) = $dpop_rps (target >= 0.80: $(awk -v r="$dpop_rps" 'BEGIN { print (r + 0 >= 0.80) ? "PASS" : "FAIL" }')); p99 (paired) = $dpop_p99 (target <= 1.00: $(awk -v r="$dpop_p99" 'BEGIN { print (r + 0 <= 1.00) ? "PASS" : "FAIL" }'))"
    say ""
    say "### opaque: GET /accounts with a cached introspected opaque token + fresh DPoP proof vs GET /status"
    say ""
    medians opaque status opaque
    ratio_row opaque opaque status
    say ""
    say "opaque CPU above auth none: $(above opaque opaque status)"
    say ""
    say "### mtls: GET /accounts with an mTLS-bound JWT over a client-certificate TLS connection vs GET /status over the same kind of connection"
    say ""
    medians mtls status-tls mtls
    ratio_row mtls mtls status-tls
    say ""
    say "mtls CPU above auth none (both over TLS with the certificate): $(above mtls mtls status-tls)"
    say ""
    say "### redis: the DPoP route with its replay records in Redis vs GET /status"
    say ""
    medians redis status dpop-redis
    ratio_row redis dpop-redis status
    say ""
    say "dpop-redis CPU above auth none: $(above redis dpop-redis status)"
    say ""
    say "### pingora: fapigate GET /status (auth none) vs the Pingora proxy"
    say ""
    medians pingora baseline status
    ratio_row pingora status baseline
    say ""
    say "### floor: the Pingora proxy vs HAProxy, both forwarding GET /status with no check"
    say ""
    medians floor haproxy-plain baseline
    ratio_row floor baseline haproxy-plain
    say ""
    say "Pingora proxy CPU above HAProxy: $(above floor baseline haproxy-plain)"
    say ""
    for s in dpop dpop-ref opaque mtls redis; do
        for name in dpop opaque mtls dpop-redis; do
            [[ -n ${bad[$s/$name]:-} ]] || continue
            if (( ${bad[$s/$name]} == 0 )); then
                say "$s: $name non-2xx + socket errors: 0 (PASS)"
            else
                say "$s: $name non-2xx + socket errors: ${bad[$s/$name]} (FAIL)"
            fi
        done
    done
fi

# ---------------------------------------------------------------------------------------- signed
if want signed; then
    headers=$(curl -s -o /dev/null -D - --max-time 2 "$gate/signed" || true)
    for h in signature signature-input content-digest; do
        grep -qi "^$h:" <<<"$headers" || { echo "$headers" >&2; die "signed: /signed has no $h header"; }
    done
    ! grep -qi '^signature:' <<<"$(curl -s -o /dev/null -D - --max-time 2 "$gate/plain")" \
        || die "signed: /plain is signed too"
    warm plain signed
    for round in $(seq 1 "$ROUNDS"); do
        measure_pair signed plain signed
    done
    say ""
    say "### signed: GET /signed (http-signature, ed25519, Content-Digest) vs GET /plain, both auth none"
    say ""
    if [[ $COUNT == time ]]; then
        medians signed plain signed
        ratio_row signed signed plain
        signed_ratio=$(ratio "$(median "${rps[signed/signed]}")" "$(median "${rps[signed/plain]}")")
        verdict=$(awk -v r="$signed_ratio" 'BEGIN { print (r + 0 >= 0.85) ? "PASS" : "FAIL" }')
        say ""
        say "signed/plain req/s = $signed_ratio (target >= 0.85: $verdict)"
    else
        counts signed signed plain
    fi
fi

# ---------------------------------------------------------------------------------------- log
if want log; then
    [[ $(curl_status "http://127.0.0.1:$log_plain_port/status") == 200 ]] || die "log: /status did not answer"
    for i in $(seq 1 50); do
        grep -q '"message":"access"' "$tmp/fapigate-log.log" && break
        sleep 0.1
    done
    grep -q '"message":"access"' "$tmp/fapigate-log.log" || die "log: fapigate-log writes no access line"
    ! grep -q '"message":"access"' "$tmp/fapigate.log" || die "log: fapigate (level warn) writes access lines"
    warm status logged
    for round in $(seq 1 "$ROUNDS"); do
        measure_pair log status logged
    done
    say ""
    say "### log: GET /status (auth none), JSON access log on (level info, to a file) vs off (level warn)"
    say ""
    medians log status logged
    ratio_row log logged status
    log_cost=$(awk -v a="$(median "${cpu[log/logged]}")" -v b="$(median "${cpu[log/status]}")" \
        'BEGIN { printf "%.1f", a - b }')
    verdict=$(awk -v c="$log_cost" 'BEGIN { print (c + 0 <= 3) ? "PASS" : "FAIL" }')
    dropped=$(curl -s --max-time 2 "http://127.0.0.1:$log_admin_port/metrics" \
        | awk '/^fapigate_access_log_dropped_total/ { print $2; f = 1 } END { if (!f) print "?" }')
    say ""
    say "access log cost = $log_cost µs CPU per request (median logged - median status; target <= 3: $verdict); lines dropped: $dropped"
fi

# ---------------------------------------------------------------------------------------- reload
reloads_ok() {
    curl -s --max-time 2 "http://127.0.0.1:$admin_port/metrics" \
        | awk '/^fapigate_config_reloads_total\{result="ok"\}/ { print $2; f = 1 } END { if (!f) print 0 }'
}

if want reload; then
    before_added=$(curl_status "$gate/added")
    reloads_before=$(reloads_ok)
    # With DPoP configured: does the replay store survive the reload? (memory backend)
    replay_probe=""
    if want dpop; then
        fresh_proofs dpop 1
        token=$(<"$tmp/dpop/token")
        cp "$(proofs_file dpop)" "$tmp/dpop/reload-probe.txt"
        replay_first=$(curl_status -H "Authorization: DPoP $token" -H "DPoP: $(<"$tmp/dpop/reload-probe.txt")" "$gate/accounts")
        replay_probe=1
    fi
    run=$((run + 1))
    rwatch=$(( $(seconds "$RELOAD_DURATION") + 30 ))
    echo "== run $run: reload: GET /status ($RELOAD_DURATION), SIGHUP at ${RELOAD_AT}s" >&2
    cpu0=$(cpu_ticks "$gate_pid")
    # shellcheck disable=SC2046
    $(pinned load) timeout "$rwatch" wrk -t1 -c"$CONNECTIONS" -d"$RELOAD_DURATION" --latency "$gate/status" \
        >"$tmp/wrk-$run-reload.txt" 2>&1 &
    wrk_pid=$!
    pids+=("$wrk_pid")
    sleep "$RELOAD_AT"
    cat >>"$tmp/fapigate.toml" <<EOF

[[route]]
id = "added"
methods = ["GET"]
path = "/added"
upstream = "bench"
auth = "none"
EOF
    kill -HUP "$gate_pid"
    hup_at=$(date +%s.%N)
    # The new route, as soon as it exists (polled while wrk still runs).
    added_after=""
    for i in $(seq 1 50); do
        if [[ $(curl_status "$gate/added") == 200 ]]; then
            added_after=$(awk -v a="$hup_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
            break
        fi
        sleep 0.05
    done
    wait "$wrk_pid" || { cat "$tmp/wrk-$run-reload.txt" >&2; die "wrk failed during the reload run"; }
    cpu1=$(cpu_ticks "$gate_pid")
    out=$(<"$tmp/wrk-$run-reload.txt")
    kill -0 "$gate_pid" 2>/dev/null || { cat "$tmp/fapigate.log" >&2; die "fapigate died after SIGHUP"; }
    reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
    r=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    l50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    l99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    n2=$(non2xx_of "$out")
    se=$(sockerr_of "$out")
    c=$(awk -v t=$((cpu1 - cpu0)) -v hz="$clk_tck" -v n="${reqs:-0}" 'BEGIN { if (n) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')
    added=$(curl_status "$gate/added")
    reloads_after=$(reloads_ok)
    rows+=("| $run | reload | status+SIGHUP | $r | $l50 | $l99 | $c | $n2 | $se |")
    verdict=PASS
    [[ -n $reqs && $reqs -gt 0 && $n2 == 0 && $se == 0 && $added == 200 && $before_added == 404 ]] || verdict=FAIL
    (( reloads_after > reloads_before )) || verdict=FAIL
    say ""
    say "### reload: GET /status for $RELOAD_DURATION, route /added appended + SIGHUP at ${RELOAD_AT}s"
    say ""
    say "| requests | req/s | p50 µs | p99 µs | non-2xx | socket errors | /added before → after | ok reloads | /added live after SIGHUP | verdict |"
    say "|---|---|---|---|---|---|---|---|---|---|"
    say "| $reqs | $r | $l50 | $l99 | $n2 | $se | $before_added → $added | $reloads_before → $reloads_after | ${added_after:-never} ms | $verdict |"
    if [[ -n $replay_probe ]]; then
        replay_again=$(curl_status -H "Authorization: DPoP $token" -H "DPoP: $(<"$tmp/dpop/reload-probe.txt")" "$gate/accounts")
        say ""
        if [[ $replay_again == 401 ]]; then
            say "DPoP proof used before the reload, replayed after it: $replay_first then $replay_again (refused: OK)"
        else
            say "WARNING: DPoP proof used before the reload, replayed after it: $replay_first then $replay_again (replay ACCEPTED across SIGHUP)"
        fi
    fi
fi

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS round(s), proxy threads $BENCH_THREADS, $(nproc) CPUs, scenario $SCENARIO, LOAD=$LOAD, log level $LOG_LEVEL, cpuidle $idle${RATE:+, offered $RATE req/s per target (a ${WRK_PAUSE_MS} ms pause per connection)}"
[[ $LOAD == alternate ]] || echo "(the two targets of a pair loaded together, proxies pinned to CPU $proxy_cpu)"
[[ $COUNT == time ]] || echo "(COUNT=instructions: the proxies ran under callgrind; their wrk figures mean nothing)"
echo
echo "| run | scenario | target | req/s | p50 µs | p99 µs | server CPU µs/req | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
printf '%s\n' "${summary[@]}"
