#!/usr/bin/env bash
# The Redis chaos run (issue 14): two gateways share one real Redis through a TCP proxy that
# passes, stalls, resets and refuses Redis connections every 1.5 s, while three clients send
# fresh DPoP proofs, each to both gateways at once. It is the e2e test
# redis_chaos::dpop_11_1_2_no_replay_is_accepted_while_redis_stalls_resets_and_refuses, run for
# CHAOS_SECONDS (the suite runs it for 20 s). It fails when a proof is admitted twice, a request
# goes unanswered, an answer is not 200/401/503, or a gateway's RSS grows by 64 MiB.
#
#   bench/chaos.sh                 (CHAOS_SECONDS=60 by default)
#
# Prints one line: proofs sent, admitted once, 503 answers, admitted twice, unanswered, RSS.
# The load comes from the test's own clients, not wrk: every proof must reach both gateways
# and both answers must be paired to count a replay, which wrk cannot do.
set -euo pipefail
cd "$(dirname "$0")/.."
FAPIGATE_CHAOS_SECONDS=${CHAOS_SECONDS:-60} cargo test --locked --test e2e -- \
  --exact redis_chaos::dpop_11_1_2_no_replay_is_accepted_while_redis_stalls_resets_and_refuses \
  --nocapture 2>&1 | grep -E "^chaos:|^test result|panicked"
