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
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

# The test authorization server (oidc-provider), pinned by its lockfile.
npm ci --prefix tests/as --no-audit --no-fund --loglevel=error

cargo test --locked --all-targets
