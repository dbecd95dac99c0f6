#!/usr/bin/env bash
# Speed and memory of one analysis of a 512x512x400 study (the issue's target: <= 5 s on two
# cores, peak RSS <= 1 GiB), as the appliance runs it: DICOM load included. Renders the
# phantom once, then runs `vcfd analyze` RUNS times per precision under /usr/bin/time and
# prints wall time, peak RSS and the stage timings from report.json.
set -euo pipefail
# As under systemd: with RUST_BACKTRACE set, every error the DICOM parser raises internally
# (it ends a data set on one) captures a backtrace, which costs more than the parse.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
WORK=${WORK:-$(mktemp -d /tmp/vcfd-bench-analysis.XXXXXX)}
cargo build --release -q -p vcfd
bin=./target/release/vcfd
if [ ! -f "$WORK/study/truth.json" ]; then
  "$bin" phantom --out "$WORK/study" --seed 7 --rows 512 --slices 400 \
    --from-level T4 --to-level L5 --slice-thickness 1 --slice-spacing 1 \
    --fracture L1:wedge:0.42 >/dev/null
fi
for p in f32 int8; do
  for i in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$bin" analyze "$WORK/study" \
      --precision "$p" --out "$WORK/out-$p" >/dev/null
    read -r wall rss <"$WORK/time.txt"
    stages=$(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['timing_ms']; print(' '.join(f'{k}={v:.0f}' for k,v in sorted(t.items())))" "$WORK/out-$p/report.json")
    echo "bench-analysis: precision=$p run=$i wall_s=$wall peak_rss_mb=$((rss / 1024)) stages_ms: $stages"
  done
done
