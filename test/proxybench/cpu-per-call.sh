#!/bin/bash
# cpu-per-call.sh PATH [NAME=VALUE...]: runs BenchmarkStdioRoundTrip's
# 8-client PATH (relay, gorelay, toolgate, ...) and prints the CPU time (user
# + system, from /proc/PID/stat) its 8 relay or proxy processes use per call,
# over 4 seconds of the run. NAME=VALUE pairs go to the environment (for
# example GORELAY_RAW=1). Used for "stdio on this session's machine" in
# BENCHMARKS.md. Run it from test/proxybench.
set -euo pipefail
path=${1:?usage: cpu-per-call.sh PATH [NAME=VALUE...]}
shift
case $path in
toolgate*) pattern='toolgate proxy --policy' ;;
*) pattern="/$path -- " ;;
esac
test=$(mktemp)
trap 'rm -f "$test"' EXIT
go test -c -o "$test" .
cpu() { # summed clock ticks (10 ms) of the matching processes
	local t=0 p
	for p in $(pgrep -f -- "$pattern"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo $t
}
out=$(mktemp)
env "$@" "$test" -test.run '^$' -test.bench "StdioRoundTrip/clients=8/path=$path\$" -test.benchtime 600000x >"$out" 2>&1 &
for _ in $(seq 1 240); do # the binaries build first
	[ "$(pgrep -f -- "$pattern" | wc -l)" -ge 8 ] && break
	sleep 0.5
done
sleep 2
c0=$(cpu) t0=$(date +%s.%N)
sleep 4
c1=$(cpu) t1=$(date +%s.%N)
wait
nsop=$(awk '/^Benchmark/ {print $3}' "$out")
grep '^Benchmark' "$out"
echo "$path $*: $(echo "($c1 - $c0) * 10000 / (($t1 - $t0) * 1000000000 / $nsop)" | bc -l | cut -c1-5) µs of CPU a call"
rm -f "$out"
