#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Used as is by CI (.ci/run) and by developers: `bash tests/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null || need_apt+=(opensc)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

# The test authorization server (oidc-provider), pinned by its lockfile.
npm ci --prefix tests/as --no-audit --no-fund --loglevel=error

# Independent RFC 9421 / JOSE verifiers (PyPI), pinned.
python3 -m pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt

# Every target: unit tests, the end-to-end suite, and the benches once each in test mode.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets 2>&1 | tee "$log"

# One closing line for all test binaries (the last cargo line belongs to a bench binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
