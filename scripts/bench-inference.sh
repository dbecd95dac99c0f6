#!/usr/bin/env bash
# The keypoint and endplate networks in tract (the product) versus onnxruntime (the reference
# runtime), same models, same input sizes, same machine, one run: prints both and the ratios
# tract/onnxruntime.
# Needs the training virtualenv (onnxruntime): VENV=/path/to/venv (default ~/.cache/vcfd-train-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-448}
ITERS=${ITERS:-20}
VENV=${VENV:-$HOME/.cache/vcfd-train-venv}
cargo build --release -q -p vcfd
out=$(./target/release/vcfd bench-model --rows "$ROWS" --iters "$ITERS")
echo "$out"
"$VENV/bin/python" - "$ROWS" "$ITERS" "$out" <<'PY'
import sys, time, re
import numpy as np, onnxruntime as ort
rows, iters, tract = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x = ((np.arange(rows * 96) % 97) / 97.0 - 0.5).astype(np.float32).reshape(1, 1, rows, 96) * 2
so = ort.SessionOptions()
so.intra_op_num_threads = 2
res = {}
# The endplate refinement: one batch of 64 patches of 5 x 33 x 17, as the analysis runs it.
xp = ((np.arange(64 * 5 * 33 * 17) % 89) / 89.0 - 0.5).astype(np.float32).reshape(64, 5, 33, 17) * 2
for net, feed, what in (
    ("keypoints", {"image": x}, f"{rows}x96"),
    ("endplates", {"patches": xp}, "endplates 64 patches"),
):
    for p in ("f32", "int8"):
        s = ort.InferenceSession(f"model/weights/{net}_{p}.onnx", so, providers=["CPUExecutionProvider"])
        s.run(None, feed)
        t = []
        for _ in range(iters):
            t0 = time.perf_counter(); s.run(None, feed); t.append((time.perf_counter() - t0) * 1000)
        t.sort()
        key = p if net == "keypoints" else f"{net}_{p}"
        res[key] = t[len(t) // 2]
        print(f"onnxruntime {p:<4} {what}: median {res[key]:.1f} ms over {iters} runs")
m = dict(re.findall(r"tract_(\w+)_ms=([\d.]+)", tract))
print("bench-inference: " + " ".join(
    f"{p}_tract_over_ort={float(m[p]) / res[p]:.2f}"
    for p in ("f32", "int8", "endplates_f32", "endplates_int8")))
PY
