#!/usr/bin/env bash
# Latency from the last slice of a study to its SR stored at a PACS, with the stages' shares.
#
#   scripts/bench-latency.sh                      # 512x512x400 phantom, quiet period 2 s
#   QUIET=10 scripts/bench-latency.sh             # the daemon's default quiet period
#   STUDY=/path/to/dicom/folder scripts/bench-latency.sh
#
# storescu sends the study to `vcfd serve`; vcfd forwards its results to dcmtk storescp (plain
# TCP on loopback). t0 is when storescu got the last C-STORE response. The status API is
# polled to time series completion (the quiet period) and the end of the analysis job; the
# PACS folder is polled for the SR (storescp names it SRc.<uid>, SRe.<uid>, ...). The analysis
# stages come from report.json's `timing_ms` (stage -> ms) when the pipeline writes it.
# Goal (issue 5): <= 7 s on 2 cores; the quiet period is a site setting on top of that.
set -euo pipefail
# As under systemd: with RUST_BACKTRACE set, every error the DICOM parser raises internally
# (it ends a data set on one) captures a backtrace, which costs more than the parse.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
cd "$(dirname "$0")/.."

VCFD=${VCFD:-target/release/vcfd}
ROWS=${ROWS:-512}
SLICES=${SLICES:-400}
SEED=${SEED:-7}
QUIET=${QUIET:-2}
TIMEOUT=${TIMEOUT:-300}
export TCP_NODELAY=1 # see bench-ingest.sh: dcmtk's Nagle default costs ~40 ms per C-STORE
for tool in storescu storescp python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench-latency: $tool is missing" >&2; exit 1; }
done
[ -x "$VCFD" ] || { echo "bench-latency: $VCFD not built (cargo build --release -p vcfd)" >&2; exit 1; }

work=$(mktemp -d /tmp/vcfd-bench-latency.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
now() { date +%s.%N; }

if [ -n "${STUDY:-}" ]; then
    files=("$STUDY"/*)
else
    echo "phantom ${ROWS}x${ROWS}x${SLICES} (seed $SEED) ..."
    "$VCFD" phantom --out "$work/study" --seed "$SEED" --rows "$ROWS" --slices "$SLICES" >/dev/null
    files=("$work"/study/*.dcm)
    # The phantom's 200 MB would otherwise be written back during the measurement and slow
    # the spool's fsyncs: a scanner's files are not dirty pages on this box.
    sync
fi
echo "${#files[@]} files"

pacs_port=$(free_port); dicom=$(free_port); http=$(free_port)
mkdir -p "$work/pacs"
storescp --aetitle PACS -od "$work/pacs" "$pacs_port" & pids+=($!)
cat >"$work/vcfd.toml" <<EOF
[scp]
listen = "127.0.0.1:$dicom"
[storage]
state_dir = "$work/state"
series_quiet_period_s = $QUIET
[http]
listen = "127.0.0.1:$http"
[forward]
backoff_initial_s = 1
backoff_max_s = 2
[[pacs]]
name = "pacs"
host = "127.0.0.1"
port = $pacs_port
called_ae_title = "PACS"
transport = "plain"
EOF
VCFD_LOG=info "$VCFD" serve --config "$work/vcfd.toml" 2>"$work/vcfd.log" & pids+=($!)
wait_port "$pacs_port"; wait_port "$dicom"

t_start=$(now)
storescu -aet BENCH -aec VCFD -to 30 -ta 30 -td 60 127.0.0.1 "$dicom" "${files[@]}"
t0=$(now)

series_field() { # prints the first series' field from /api/studies, or nothing
    curl -s --max-time 2 "http://127.0.0.1:$http/api/studies" |
        python3 -c "import json,sys
try: v=json.load(sys.stdin); print(v[0]['series'][0]['$1'] or '')
except Exception: pass" || true
}
t_complete=""; t_done=""; t_sr=""
deadline=$(python3 -c "print($t0+$TIMEOUT)")
while :; do
    t=$(now)
    st=$(series_field job_state)
    if [ -z "$t_complete" ] && [ -n "$st" ]; then t_complete=$t; fi
    if [ -z "$t_done" ]; then
        case "$st" in done | quarantined) t_done=$t ;; esac
    fi
    # The forwarder may deliver the SR before the job's "done" is written (it is written after
    # the outbox): then both happened within this polling step.
    if ls "$work/pacs" | grep -q '^SR'; then t_sr=$t; t_done=${t_done:-$t}; break; fi
    [ "$st" = quarantined ] && break
    # Polling costs CPU the analysis needs: a 0.2 s step bounds the timing error to 0.2 s.
    if python3 -c "import sys; t=$t; d='$t_done'; sys.exit(0 if t > $deadline or (d and t > float(d) + 5) else 1)"; then
        break
    fi
    sleep 0.2
done

report=$(find "$work/state/results" -name report.json 2>/dev/null | head -1)
python3 - "$t_start" "$t0" "${t_complete:-}" "${t_done:-}" "${t_sr:-}" "${report:-}" "$QUIET" "$(ls "$work/pacs" | wc -l)" <<'EOF'
import json, sys
t_start, t0 = float(sys.argv[1]), float(sys.argv[2])
opt = lambda s: float(s) if s else None
t_complete, t_done, t_sr = map(opt, sys.argv[3:6])
report, quiet, at_pacs = sys.argv[6], sys.argv[7], sys.argv[8]
print(f"\nsend (storescu, all slices): {t0 - t_start:.2f} s")
if t_complete is None:
    sys.exit("the series never completed: see the daemon log")
print(f"last slice -> series complete (quiet period {quiet} s + tick): {t_complete - t0:.2f} s")
if t_done is not None:
    print(f"series complete -> job done (analysis):                {t_done - t_complete:.2f} s")
timing = {}
if report:
    rep = json.load(open(report))
    timing = rep.get("timing_ms") or {}
    if not timing and "load_seconds" in rep:
        timing = {"load": rep["load_seconds"] * 1000}
if timing and t_done is not None:
    total = t_done - t_complete
    for stage, ms in timing.items():
        if isinstance(ms, (int, float)):
            print(f"    {stage:<20} {ms / 1000:6.2f} s ({100 * ms / 1000 / total:4.0f} % of the job)")
if t_sr is None:
    print(f"no SR reached the PACS ({at_pacs} file(s) there): the pipeline writes no SR yet, "
          "so the latency to the SR cannot be measured")
    sys.exit(0)
lat = t_sr - t0
print(f"job done -> SR stored at the PACS (outbox + C-STORE):  {t_sr - t_done:.2f} s")
print(f"\nLATENCY last slice -> SR at the PACS: {lat:.2f} s "
      f"({lat - (t_complete - t0):.2f} s without the quiet period)")
EOF
