#!/usr/bin/env bash
# disk-growth.sh: the size of TinyMQ's data directory over a long steady
# persistent QoS 1 run (issue 11: "the disk growth over a one-hour steady QoS 1
# run; compaction keeps it proportional to live state").
#
#   DURATION=1h RATE=2000 PAIRS=10 OUT=/tmp/disk-growth bench/disk-growth.sh
#
# Builds bin/tinymq and bin/tinymq-bench when they are missing, starts tinymq
# on a fresh temporary --data-dir (--fsync interval, no HTTP, no $SYS), runs
# `tinymq-bench pairs --persistent --qos 1 --rate RATE --duration DURATION`
# against it, and samples `du -sb DATADIR` and the broker's RSS every SAMPLE
# seconds into OUT/samples.csv. Everything it starts it stops (by pid) on exit,
# on error and on ^C. At the end it prints the min, max and last disk bytes.
# The live state of this run is small and constant (each message is stored,
# delivered, acknowledged and deleted), so a healthy store stays flat after
# warm-up; growth with the number of messages passed is a finding.
set -eu

DURATION=${DURATION:-1h}
RATE=${RATE:-2000}
PAIRS=${PAIRS:-10}
SAMPLE=${SAMPLE:-30}
PORT=${PORT:-21883}
OUT=${OUT:-/tmp/disk-growth}
FSYNC=${FSYNC:-interval}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x bin/tinymq ] || go build -o bin/tinymq ./cmd/tinymq
[ -x bin/tinymq-bench ] || go build -o bin/tinymq-bench ./cmd/tinymq-bench

mkdir -p "$OUT"
data=$(mktemp -d /tmp/disk-growth-data.XXXXXX)
broker=""
bench=""
cleanup() {
	[ -n "$bench" ] && kill "$bench" 2>/dev/null || true
	if [ -n "$broker" ]; then
		kill -TERM "$broker" 2>/dev/null || true
		i=0
		while kill -0 "$broker" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$broker" 2>/dev/null || true
	fi
	rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin/tinymq --mqtt-addr "127.0.0.1:$PORT" --data-dir "$data" --fsync "$FSYNC" \
	--http-addr= --sys-interval 0 >"$OUT/broker.log" 2>&1 &
broker=$!
i=0
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
	i=$((i + 1))
	[ $i -gt 100 ] && { echo "tinymq did not listen on $PORT; see $OUT/broker.log" >&2; exit 1; }
	kill -0 "$broker" 2>/dev/null || { echo "tinymq exited; see $OUT/broker.log" >&2; exit 1; }
	sleep 0.1
done

bin/tinymq-bench pairs --addr "127.0.0.1:$PORT" --persistent --qos 1 \
	--publishers "$PAIRS" --rate "$RATE" --duration "$DURATION" \
	--broker-pid "$broker" --quiet >"$OUT/bench.txt" 2>&1 &
bench=$!

echo "elapsed_s,disk_bytes,rss_kb,files" >"$OUT/samples.csv"
start=$(date +%s)
sample() {
	now=$(date +%s)
	disk=$(du -sb "$data" | cut -f1)
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$broker/status" 2>/dev/null || echo 0)
	files=$(find "$data" -type f | wc -l)
	echo "$((now - start)),$disk,$rss,$files" >>"$OUT/samples.csv"
}
sample
while kill -0 "$bench" 2>/dev/null; do
	n=0
	while [ $n -lt "$SAMPLE" ] && kill -0 "$bench" 2>/dev/null; do sleep 1; n=$((n + 1)); done
	kill -0 "$broker" 2>/dev/null || { echo "tinymq died; see $OUT/broker.log" >&2; exit 1; }
	sample
done
rc=0
wait "$bench" || rc=$?
bench=""
sample
# a clean stop: the size the next start finds
kill -TERM "$broker" 2>/dev/null || true
i=0
while kill -0 "$broker" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -0 "$broker" 2>/dev/null && { kill -KILL "$broker"; echo "tinymq did not stop in 30 s" >&2; }
broker=""
stopped=$(du -sb "$data" | cut -f1)
cat "$OUT/bench.txt"
awk -F, 'NR > 1 { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2; last = $2; rss = $3 }
	END { printf "disk bytes: min %d max %d last %d (samples: %d); last RSS %d kB\n", min, max, last, NR - 1, rss }' \
	"$OUT/samples.csv" | tee "$OUT/summary.txt"
echo "disk bytes after a clean stop: $stopped" | tee -a "$OUT/summary.txt"
echo "samples: $OUT/samples.csv"
exit $rc
