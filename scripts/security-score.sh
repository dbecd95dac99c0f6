#!/usr/bin/env bash
# Measures the systemd sandboxing of provisioning/vcfd.service with
# `systemd-analyze security --offline=true` (no running systemd needed: works in CI containers)
# and fails when the exposure is above 2.0 ("OK" or better is the target).
# Usage: scripts/security-score.sh [--verbose]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
max="${VCFD_MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "systemd-analyze not found; installing the systemd package" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    else
        echo "error: systemd-analyze not found; install systemd (apt-get install -y systemd)" >&2
        exit 1
    fi
fi

# The unit references vcfd.socket; analyse both from a scratch copy so nothing from the host's
# /etc/systemd (drop-ins, overrides) changes the result.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$repo/provisioning/vcfd.service" "$repo/provisioning/vcfd.socket" "$work/"
cd "$work"
threshold="$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')"
set +e
out="$(systemd-analyze security --offline=true --threshold="$threshold" vcfd.service 2>&1)"
rc=$?
set -e
if [ "${1:-}" = "--verbose" ]; then
    printf '%s\n' "$out"
else
    printf '%s\n' "$out" | grep -E '✗' || true
fi
score_line="$(printf '%s\n' "$out" | grep -E 'Overall exposure level' || true)"
echo "systemd $(systemd-analyze --version | head -1 | awk '{print $2}'): ${score_line#→ }"
if [ -z "$score_line" ]; then
    echo "error: no score from systemd-analyze" >&2
    exit 1
fi
if [ "$rc" -ne 0 ]; then
    echo "error: exposure above $max (or systemd-analyze failed, rc=$rc)" >&2
    exit 1
fi
