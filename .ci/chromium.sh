#!/usr/bin/env bash
# Debian's chromium for tests/e2e/test_estimate_web.py (the `estimate --web` page in a real browser,
# driven by Playwright with executable_path=/usr/bin/chromium: Playwright never downloads a browser).
#
#   .ci/chromium.sh install   apt-get install chromium (root only; no-op when present)
set -euo pipefail

die() { echo "chromium.sh: $*" >&2; exit 1; }

case "${1:-}" in
install)
    command -v chromium >/dev/null && exit 0
    [ "$(id -u)" = 0 ] || die "chromium is missing and installing it needs root"
    command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
    ;;
*) die "usage: .ci/chromium.sh install" ;;
esac
