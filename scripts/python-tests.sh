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
# And what the product itself writes: `vcfd analyze --out` on the demo's fracture phantom
# (grade 3 wedge at L1, grade 2 biconcave at T8) and on the real CT.
BIN="$ROOT/target/release/vcfd"
"$BIN" phantom --out "$OUT/ct-fracture" --seed 7 --rows 320 --from-level T4 --to-level L3 \
    --fracture L1:wedge:0.42 --fracture T8:biconcave:0.30 >/dev/null
"$BIN" analyze "$OUT/ct-fracture" --out "$OUT/cli-fracture-phantom" >/dev/null
"$BIN" analyze "$ROOT/../shared/data/totalseg-abdomen-3mm" --out "$OUT/cli-real-ct" >/dev/null
rm -rf "$OUT/ct-fracture"
VCFD_SR_DIR="$OUT" "$VENV/bin/python" -m pytest -q "$ROOT/tests/python/test_sr.py"
