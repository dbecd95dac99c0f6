#!/usr/bin/env bash
# Reproduces both CNNs end to end: training samples from the project's phantom (rendered by the
# same Rust preprocessing as inference), PyTorch training of the keypoint network and of the
# endplate refinement network, ONNX export (f32), static int8 quantisation, and the
# tract-vs-onnxruntime reference files the Rust tests compare against.
#
#   scripts/train.sh                 # writes model/weights/ (the shipped files)
#   OUT=/tmp/w scripts/train.sh      # somewhere else, e.g. to compare before replacing
#
# WORK (default /tmp/vcfd-train) holds the samples; the virtualenv lives outside the repository
# (VENV, default ~/.cache/vcfd-train-venv) because PyTorch's wheels are several GB.
# On the 2-core development box (measured 2026-12-07, weights 0.3.0): ~22 min of samples (841
# studies, two processes in parallel), ~8 min of keypoint training (50 epochs) and ~14 min of
# endplate training (20 epochs); an earlier, slower VM took 33 / 12 / 20 min.
# Seeds are fixed; seeds from
# 90000 up are never used here (evaluation owns them).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-/tmp/vcfd-train}"
OUT="${OUT:-model/weights}"
VENV="${VENV:-$HOME/.cache/vcfd-train-venv}"
EPOCHS="${EPOCHS:-50}"

cargo build --release -p vcfd
VCFD="$PWD/target/release/vcfd"
mkdir -p "$WORK"

# name count first-seed extra-args. Sets d1/d2 hold the phantom's clinical mix (about 3 % of
# bodies fractured), d3/d4 four fractures per study so the regression sees enough deformed
# shapes; they render every 4th study with coarse 1.5-3.2 mm pixels.
make_set() {
    local name=$1 count=$2 seed=$3
    shift 3
    if [ -f "$WORK/$name/labels.jsonl" ] && [ "$(wc -l <"$WORK/$name/labels.jsonl")" -ge "$count" ]; then
        echo "$name: already there"
        return
    fi
    rm -rf "${WORK:?}/$name"
    "$VCFD" dataset --out "$WORK/$name" --count "$count" --seed "$seed" "$@" >"$WORK/$name.log" 2>&1
}
(make_set d1 260 1000 --coarse-every 0 && make_set d2 141 2000 --coarse-every 0 &&
    make_set d5 60 5000 --schmorl 6) &
a=$!
(make_set d3 160 3000 --fractures 4 && make_set d4 160 4000 --fractures 4 &&
    make_set d6 60 5060 --schmorl 6) &
b=$!
# Wait on each job: a bare `wait` returns 0 even when a set failed.
wait "$a"
wait "$b"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.15.0 numpy==2.4.6 onnx==1.23.2 onnxruntime==1.31.1
fi
mkdir -p "$OUT"
"$VENV/bin/python" model/train/train.py \
    --data "$WORK/d1" --data "$WORK/d2" --data "$WORK/d3" --data "$WORK/d4" \
    --data "$WORK/d5" --data "$WORK/d6" \
    --out "$OUT" --epochs "$EPOCHS" --seed 1
"$VENV/bin/python" model/train/train_endplates.py \
    --data "$WORK/d1" --data "$WORK/d2" --data "$WORK/d3" --data "$WORK/d4" \
    --data "$WORK/d5" --data "$WORK/d6" \
    --out "$OUT" --epochs "${ENDPLATE_EPOCHS:-20}" --seed 1
echo "weights in $OUT; check them with: cargo run --release -p vcfd -- evaluate --cases 200 --seed 90001"
