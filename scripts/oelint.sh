#!/usr/bin/env bash
# Lints every bitbake file of yocto/meta-vcf with oelint-adv (PyPI) and fails on any error.
# oelint-adv lives in a virtualenv outside the repository; set OELINT_ADV_VERSION to pin
# another release. Also checks that the locked crate list matches Cargo.lock.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VCFD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vcfd-venv}"
version="${OELINT_ADV_VERSION:-9.11.2}"
release="${OELINT_RELEASE:-scarthgap}"

if ! "$venv/bin/oelint-adv" --version 2>/dev/null | grep -qx "oelint-adv $version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "oelint-adv==$version"
fi

layer="$repo/yocto/meta-vcf"
mapfile -t files < <(find "$layer" -type f \( -name '*.bb' -o -name '*.bbappend' -o -name '*.bbclass' \) | sort)
if [ "${#files[@]}" -eq 0 ]; then
    echo "error: no recipes under $layer" >&2
    exit 1
fi

python3 "$repo/scripts/yocto-crates.py" --check

# --release: the rules (variable names, renamed classes) of the Yocto release we target.
# Findings go to stdout; the exit status counts errors only (warnings and infos are shown).
# --constantmods: the layer's own variables, so that typos in any other name are still caught.
out="$("$venv/bin/oelint-adv" --quiet --exit-zero --relpaths --release "$release" \
    --constantmods "+$repo/scripts/oelint-constants.json" \
    --output /dev/stdout "${files[@]}" 2>&1)"
[ -n "$out" ] && printf '%s\n' "$out"
errors="$(printf '%s\n' "$out" | grep -c ':error:' || true)"
echo "oelint-adv $version ($release): ${#files[@]} recipe(s), $errors error(s), $(printf '%s\n' "$out" | grep -c ':warning:' || true) warning(s)"
[ "$errors" -eq 0 ]
