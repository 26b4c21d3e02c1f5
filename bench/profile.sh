#!/usr/bin/env bash
# Where the DPoP route's CPU goes: bench/load.sh dpop runs once (one round), and while its dpop
# pair (the DPoP route with auth = "none"'s /status) and its dpop-ref pair (the DPoP route with
# HAProxy jwt_verify) are loaded, perf samples each target's process for PERF_SECONDS. Each
# symbol's share of its process's samples is then multiplied by that target's CPU µs/req from
# the same run (from /proc, which perf's sampling does not distort), and the two targets of each
# pair are printed side by side, grouped, with the largest differences first.
#
#   bench/profile.sh               (DURATION=10s PERF_SECONDS=5 RATE= SKIP_BUILD= as load.sh)
#
# Needs everything bench/load.sh dpop needs, and perf (Debian: linux-perf). Samples cpu-clock,
# the event a VM offers; no call graphs (they cost the sampled process enough to move its
# figures). In the same windows perf stat counts each target's writes and the IPIs it sends to
# wake a halted vCPU, the peer wake of load.sh's IDLE_POLL_NS, and prices one IPI. The perf
# data and reports stay in PROFILE_DIR (default: a new folder in /tmp).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
DURATION=${DURATION:-10s}
PERF_SECONDS=${PERF_SECONDS:-5}
PROFILE_DIR=${PROFILE_DIR:-$(mktemp -d /tmp/fapigate-profile.XXXXXX)}
die() { echo "profile.sh: $*" >&2; exit 1; }
command -v perf >/dev/null || die "perf is needed (Debian: apt-get install linux-perf)"
[[ $PERF_SECONDS =~ ^[1-9][0-9]*$ ]] || die "PERF_SECONDS must be a positive integer"
mkdir -p "$PROFILE_DIR"

ROUNDS=1 WARMUP=0 KEEP_TMP=1 DURATION=$DURATION bash "$here/load.sh" dpop \
    >"$PROFILE_DIR/load.out" 2>"$PROFILE_DIR/load.err" &
load=$!
trap 'kill "$load" 2>/dev/null || true' EXIT

# record PAIR NAME=PATTERN...: once load.sh announces PAIR, samples each process matching a
# pgrep -f PATTERN (the oldest one) into NAME.data, all at the same time.
record() {
    local pair=$1 spec name pattern pid
    shift
    until grep -qF ": $pair (" "$PROFILE_DIR/load.err" 2>/dev/null; do
        kill -0 "$load" 2>/dev/null || die "load.sh ended before $pair (see $PROFILE_DIR/load.err)"
        sleep 0.2
    done
    sleep 1 # past the pair's first second
    local perfs=()
    for spec in "$@"; do
        name=${spec%%=*}
        pattern=${spec#*=}
        pid=$(pgrep -o -f "$pattern") || die "no process for $name ($pattern)"
        perf record -q -e cpu-clock -F 4000 -p "$pid" -o "$PROFILE_DIR/$name.data" \
            -- sleep "$PERF_SECONDS" 2>>"$PROFILE_DIR/perf.err" &
        perfs+=("$!")
        # Counted, not sampled: the writes and the IPIs they sent to wake a halted vCPU.
        perf stat -x, -e syscalls:sys_enter_sendto,ipi:ipi_send_cpu,ipi:ipi_send_cpumask \
            -p "$pid" -o "$PROFILE_DIR/$name.stat" -- sleep "$PERF_SECONDS" \
            2>>"$PROFILE_DIR/perf.err" &
        perfs+=("$!")
    done
    wait "${perfs[@]}"
}
gateway='fapigate run --config /tmp/fapigate-bench\.[^/]*/'
record "dpop: dpop and status together" \
    "dpop=${gateway}fapigate\.toml" "status=${gateway}fapigate-b\.toml"
record "dpop-ref: dpop and haproxy-jwt together" \
    "dpop-ref=${gateway}fapigate\.toml" "haproxy-jwt=haproxy -db -f /tmp/fapigate-bench\.[^/]*/haproxy\.cfg"
wait "$load" || die "load.sh failed (see $PROFILE_DIR/load.err)"
trap - EXIT

# cpu ROW TARGET: the target's server CPU µs/req in load.sh's table of runs.
cpu() {
    awk -F'|' -v s="$1" -v t="$2" '{ gsub(/ /, "", $3); gsub(/ /, "", $4) }
        $3 == s && $4 == t { gsub(/ /, "", $8); print $8; exit }' "$PROFILE_DIR/load.out"
}
for name in dpop status dpop-ref haproxy-jwt; do
    perf report -i "$PROFILE_DIR/$name.data" --no-children --sort dso,sym --stdio -n 2>/dev/null \
        | grep -v '^#' | grep -v '^$' >"$PROFILE_DIR/$name.txt" || true
done

# side SCENARIO A B: each group's µs/req for A and B and their difference.
side() {
    local a_cpu b_cpu
    a_cpu=$(cpu "$1" "$2")
    b_cpu=$(cpu "$1" "$3")
    [[ -n $a_cpu && -n $b_cpu ]] || die "no CPU figures for $1 in $PROFILE_DIR/load.out"
    echo "### $1: $2 ($a_cpu CPU µs/req) vs $3 ($b_cpu)"
    echo
    python3 - "$PROFILE_DIR/$4.txt" "$a_cpu" "$PROFILE_DIR/$5.txt" "$b_cpu" <<'PY'
import collections, re, sys

def group(dso, sym):
    """The part of a proxied request a symbol belongs to."""
    if dso == "[kernel.kallsyms]":
        if "spin_unlock_irqrestore" in sym:
            return "kernel: waking a peer (irq restore after a wake-up)"
        return "kernel: other (TCP, syscalls, scheduling)"
    if re.search(r"nistz256|beeu|ecdsa|ECDSA|EVP_|\bbn_|BN_|ec_point|ec_GFp|aws_lc_0_\d+_0_ec", sym):
        return "aws-lc: ECDSA P-256 verification"
    if "sha256" in sym.lower() or "sha2::" in sym:
        return "SHA-256 (ath, token and proof digests)"
    if re.search(r"mi_|malloc|free|cfree|memmove|memcpy|memset", sym):
        return "allocator and memory copies"
    if "fapigate::" in sym or "base64" in sym or "serde" in sym or "moka" in sym:
        return "fapigate's admission (own code, JSON, base64, caches)"
    if "pingora" in sym or "httparse" in sym or "http::" in sym:
        return "Pingora and http (parse, header edits, proxying)"
    if "tokio" in sym or "mio" in sym:
        return "tokio and mio"
    return "other userland (" + dso + ")"

def load(path, cpu):
    groups, syms, total = collections.Counter(), collections.Counter(), 0
    for line in open(path):
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*)", line)
        if m:
            n, dso, sym = int(m[1]), m[2], m[3].strip()
            total += n
            groups[group(dso, sym)] += n
            syms[sym] += n
    scale = float(cpu) / total if total else 0.0
    return ({k: v * scale for k, v in groups.items()}, {k: v * scale for k, v in syms.items()})

(ga, sa), (gb, sb) = load(sys.argv[1], sys.argv[2]), load(sys.argv[3], sys.argv[4])
print("| group | A µs/req | B µs/req | A - B |")
print("|---|---|---|---|")
for k in sorted(set(ga) | set(gb), key=lambda k: -(ga.get(k, 0) - gb.get(k, 0))):
    print(f"| {k} | {ga.get(k, 0):.1f} | {gb.get(k, 0):.1f} | {ga.get(k, 0) - gb.get(k, 0):+.1f} |")
print()
print("| symbol (the 25 largest differences) | A µs/req | B µs/req | A - B |")
print("|---|---|---|---|")
diff = {k: sa.get(k, 0) - sb.get(k, 0) for k in set(sa) | set(sb)}
for k in sorted(diff, key=lambda k: -abs(diff[k]))[:25]:
    print(f"| `{k[:100]}` | {sa.get(k, 0):.2f} | {sb.get(k, 0):.2f} | {diff[k]:+.2f} |")
PY
    echo
}
# wakes NAME CPU...: per target, its writes and the IPIs it sent in the sampled window, and
# what the peer-wake group costs per IPI. Each proxied request is two writes (sendto), one to
# the upstream and one to the client, for fapigate and HAProxy alike.
wakes() {
    echo "| target | writes | IPIs sent | IPIs per request | peer wake µs/req | µs per IPI |"
    echo "|---|---|---|---|---|---|"
    local name
    for name in "$@"; do
        python3 - "$name" "$PROFILE_DIR/$name.stat" "$PROFILE_DIR/$name.txt" "$(cpu_of "$name")" <<'PY'
import re, sys
name, stat, report, cpu = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
counts = {}
for line in open(stat):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        counts[f[2]] = int(f[0])
writes = counts.get("syscalls:sys_enter_sendto", 0)
ipis = counts.get("ipi:ipi_send_cpu", 0) + counts.get("ipi:ipi_send_cpumask", 0)
total = wake = 0
for line in open(report):
    m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*)", line)
    if m:
        total += int(m[1])
        if m[2] == "[kernel.kallsyms]" and "spin_unlock_irqrestore" in m[3]:
            wake += int(m[1])
wake_us = cpu * wake / total if total else 0.0
per_request = 2 * ipis / writes if writes else 0.0
# Below a fifth of an IPI per request the group is other time with interrupts off, not IPIs.
per_ipi = f"{wake_us / per_request:.1f}" if per_request >= 0.2 else "-"
print(f"| {name} | {writes} | {ipis} | {per_request:.2f} | {wake_us:.1f} | {per_ipi} |")
PY
    done
    echo
}
# cpu_of NAME: the CPU µs/req of a sampled target (NAME as record() named it).
cpu_of() {
    case $1 in
        dpop) cpu dpop dpop ;;
        status) cpu dpop status ;;
        dpop-ref) cpu dpop-ref dpop ;;
        haproxy-jwt) cpu dpop-ref haproxy-jwt ;;
    esac
}
{
    side dpop dpop status dpop status
    side dpop-ref dpop haproxy-jwt dpop-ref haproxy-jwt
    echo "### IPIs: the peer wake counted (the same windows)"
    echo
    wakes dpop status dpop-ref haproxy-jwt
    echo "perf data, reports and load.sh's output: $PROFILE_DIR"
} | tee "$PROFILE_DIR/profile.md"
