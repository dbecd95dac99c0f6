#!/usr/bin/env bash
# Ingest throughput of vcfd's SCP versus dcmtk storescp, same files, same storescu, same run.
#
#   scripts/bench-ingest.sh            # 512x512x400 phantom, 3 rounds
#   ROWS=256 SLICES=100 ROUNDS=1 scripts/bench-ingest.sh
#
# Each round sends the whole study once to storescp and once to a fresh vcfd (fresh state:
# a second send would hit vcfd's duplicate path), alternating which goes first. The series
# quiet period is set to an hour so no analysis competes with the receiver while it is timed.
# Not a like-for-like durability comparison: vcfd fsyncs every instance (and flushes sled)
# before answering Success; storescp writes without fsync. Figures go to docs/BENCHMARKS.md.
set -euo pipefail
# As under systemd: with RUST_BACKTRACE set, every error the DICOM parser raises internally
# (it ends a data set on one) captures a backtrace, which costs more than the parse.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
cd "$(dirname "$0")/.."

VCFD=${VCFD:-target/release/vcfd}
ROWS=${ROWS:-512}
SLICES=${SLICES:-400}
ROUNDS=${ROUNDS:-3}
SEED=${SEED:-7}
# dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1; with it on, every C-STORE waits for a
# delayed ACK (~40 ms) and both receivers measure that instead of themselves. vcfd sets
# TCP_NODELAY on its own sockets.
export TCP_NODELAY=1
for tool in storescu storescp python3; do
    command -v "$tool" >/dev/null || { echo "bench-ingest: $tool is missing (apt-get install dcmtk)" >&2; exit 1; }
done
[ -x "$VCFD" ] || { echo "bench-ingest: $VCFD not built (cargo build --release -p vcfd)" >&2; exit 1; }

# WORK_PARENT=/dev/shm puts study, spool and storescp output on tmpfs, where fsync is free:
# the difference to a disk run is the price of durability.
work=$(mktemp -d "${WORK_PARENT:-/tmp}/vcfd-bench-ingest.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
now() { date +%s.%N; }

echo "phantom ${ROWS}x${ROWS}x${SLICES} (seed $SEED) ..."
"$VCFD" phantom --out "$work/study" --seed "$SEED" --rows "$ROWS" --slices "$SLICES" >/dev/null
files=("$work"/study/*.dcm)
bytes=$(cat "${files[@]}" | wc -c)
mb=$(python3 -c "print($bytes/1e6)")
echo "${#files[@]} files, $(printf '%.1f' "$mb") MB"

send() { # port called-ae
    storescu -aet BENCH -aec "$2" -to 30 -ta 30 -td 60 127.0.0.1 "$1" "${files[@]}"
}

time_storescp() {
    local port out
    port=$(free_port); out="$work/storescp-out"; rm -rf "$out"; mkdir -p "$out"
    storescp --aetitle STORESCP -od "$out" "$port" & pids+=($!)
    local pid=$!
    wait_port "$port"
    local t0 t1
    t0=$(now); send "$port" STORESCP; t1=$(now)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ "$(ls "$out" | wc -l)" -eq "${#files[@]}" ] || { echo "storescp kept $(ls "$out" | wc -l) files" >&2; exit 1; }
    T=$(python3 -c "print($t1-$t0)")
}

time_vcfd() {
    local dicom http state
    dicom=$(free_port); http=$(free_port); state="$work/vcfd-state"; rm -rf "$state"
    cat >"$work/vcfd.toml" <<EOF
[scp]
listen = "127.0.0.1:$dicom"
[storage]
state_dir = "$state"
series_quiet_period_s = 3600
[http]
listen = "127.0.0.1:$http"
EOF
    VCFD_LOG=warn "$VCFD" serve --config "$work/vcfd.toml" 2>>"$work/vcfd.log" & pids+=($!)
    local pid=$!
    wait_port "$dicom"
    local t0 t1
    t0=$(now); send "$dicom" VCFD; t1=$(now)
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    local n
    n=$(find "$state/spool" -name '*.dcm' | wc -l)
    [ "$n" -eq "${#files[@]}" ] || { echo "vcfd spooled $n files" >&2; exit 1; }
    T=$(python3 -c "print($t1-$t0)")
}

printf '\n%-6s %12s %12s %12s %12s %8s\n' round storescp_s vcfd_s storescp_MB/s vcfd_MB/s ratio
results=()
for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then
        time_storescp; a=$T; time_vcfd; b=$T
    else
        time_vcfd; b=$T; time_storescp; a=$T
    fi
    results+=("$a $b")
    python3 -c "a,b,mb=$a,$b,$mb;print(f'{$r:<6} {a:12.2f} {b:12.2f} {mb/a:12.1f} {mb/b:12.1f} {a/b:8.2f}')"
done
python3 - "$mb" "${#files[@]}" "${results[@]}" <<'EOF'
import statistics, sys
mb, n = float(sys.argv[1]), int(sys.argv[2])
pairs = [tuple(map(float, p.split())) for p in sys.argv[3:]]
a = statistics.median(p[0] for p in pairs)
b = statistics.median(p[1] for p in pairs)
print(f"\nmedian: storescp {a:.2f} s ({n/a:.0f} inst/s, {mb/a:.1f} MB/s), "
      f"vcfd {b:.2f} s ({n/b:.0f} inst/s, {mb/b:.1f} MB/s); "
      f"vcfd/storescp throughput ratio {a/b:.2f} (>= 1 means vcfd is at least as fast)")
EOF
