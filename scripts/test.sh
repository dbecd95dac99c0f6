#!/usr/bin/env bash
# The project's one test command (named in README.md, called by .ci/run).
# Installs what the tests need on a fresh Debian machine, then runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

# --- system packages ---------------------------------------------------------------------
# dcmtk: storescu/storescp and the transfer-syntax converters the loader tests use;
# dicom3tools: dciodvfy, the DICOM validator; cmake + g++: CharLS (JPEG-LS) builds from source.
# The daemon's e2e tests skip a missing peer (Orthanc) only outside CI: CI=true fails instead.
missing=()
command -v dcmconv >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# orthanc: the TLS PACS of the daemon's end-to-end test (started by the test, not as a service).
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# chromium + chromium-driver: the status page's end-to-end test drives headless Chromium over
# WebDriver (tests/status_page.rs).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# --- Rust ---------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

# Everything is built with the release profile only, so CI compiles tract and dicom-rs once.
step "cargo build --release"
cargo build --release --workspace --all-targets

step "cargo clippy -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings

step "cargo test --release"
cargo test --release --workspace

# --- everything that is not cargo ----------------------------------------------------------
step "Python reader test of the SR (pydicom + highdicom)"
bash scripts/python-tests.sh

step "Yocto layer: oelint-adv and the locked crate list"
bash scripts/oelint.sh

step "systemd sandbox score of vcfd.service (must be <= 2.0)"
bash scripts/security-score.sh

step "all checks passed"
