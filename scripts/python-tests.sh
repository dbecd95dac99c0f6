#!/usr/bin/env bash
# Python reader test of the SR: pydicom (and highdicom when it installs) must read what vcfd
# writes and agree with the JSON report value by value.
#
# The virtualenv lives outside the repository (override with VCFD_PYTEST_VENV). The SR and
# JSON come from the Rust SR tests (fracture phantom and the real CT in ../shared/data).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VCFD_PYTEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vcfd-pytest-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check pydicom pytest
"$VENV/bin/pip" install -q --disable-pip-version-check highdicom \
    || echo "python-tests: highdicom did not install; checking with pydicom only"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
(cd "$ROOT" && VCFD_SR_EXPORT_DIR="$OUT" cargo test --release -p vcfd --test sr -- \
    fracture_phantom_sr_and_images real_ct_results)
VCFD_SR_DIR="$OUT" "$VENV/bin/python" -m pytest -q "$ROOT/tests/python/test_sr.py"
