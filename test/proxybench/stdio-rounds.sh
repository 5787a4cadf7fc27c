#!/bin/bash
# stdio-rounds.sh CLIENTS ROUNDS [CALLS]: BenchmarkStdioRoundTrip with each
# path in its own run of the test binary, the paths taking turns, ROUNDS
# times, CALLS calls a run (default 100000). One run per path keeps one
# path's processes from shaping the next path's figures (in a single run
# all paths' sessions stay up until the end, and the order of the paths
# moved relay.c's 8-client median by 3x); taking turns spreads the shared
# machine's drift over all paths alike. Prints each run, then the medians
# over the rounds and the ratios computed from them. Run it from
# test/proxybench; used for "stdio, in turns" in BENCHMARKS.md.
set -euo pipefail
clients=${1:?usage: stdio-rounds.sh CLIENTS ROUNDS [CALLS]}
rounds=${2:?usage: stdio-rounds.sh CLIENTS ROUNDS [CALLS]}
calls=${3:-100000}
paths="direct relay toolgate toolgate-denied toolgate-disk"
test=$(mktemp)
out=$(mktemp)
trap 'rm -f "$test" "$out"' EXIT
go test -c -o "$test" .
for r in $(seq 1 "$rounds"); do
	for p in $paths; do
		"$test" -test.run '^$' -test.bench "StdioRoundTrip/clients=$clients/path=$p\$" -test.benchtime "${calls}x" |
			awk -v p="$p" -v r="$r" '/^Benchmark/ {print r, p, $3, $5, $7; fflush()}' | tee -a "$out"
	done
done
# Medians per path, then the ratios. "mean" is the benchmark's ns/op: the
# mean round trip at 1 client; at 8, wall time per call over all clients
# (the inverse of throughput), as in BENCHMARKS.md.
awk -v paths="$paths" '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{ n[$2]++; mean[$2, n[$2]] = $3; p50[$2, n[$2]] = $4; p99[$2, n[$2]] = $5 }
END {
	split(paths, ps, " ")
	print "\nmedians (µs):        mean      p50      p99"
	for (k = 1; k in ps; k++) {
		p = ps[k]; m = n[p]
		if (m == 0) { print "stdio-rounds.sh: no result for path " p > "/dev/stderr"; bad = 1; exit 1 }
		split("", a); split("", b); split("", c)
		for (i = 1; i <= m; i++) { a[i] = mean[p, i]; b[i] = p50[p, i]; c[i] = p99[p, i] }
		M[p] = median(a, m); P[p] = median(b, m); Q[p] = median(c, m)
		printf "%-16s %9.1f %8.1f %8.1f\n", p, M[p] / 1000, P[p] / 1000, Q[p] / 1000
	}
	if (bad) exit 1
	if (M["relay"] == M["direct"] || P["relay"] == P["direct"] || Q["relay"] == Q["direct"]) { print "stdio-rounds.sh: relay.c added nothing; no ratio" > "/dev/stderr"; exit 1 }
	printf "\ntoolgate adds ÷ relay.c adds: mean %.2fx, p50 %.2fx, p99 %.2fx (target ≤ 1.5x)\n",
		(M["toolgate"] - M["direct"]) / (M["relay"] - M["direct"]), (P["toolgate"] - P["direct"]) / (P["relay"] - P["direct"]), (Q["toolgate"] - Q["direct"]) / (Q["relay"] - Q["direct"])
	printf "denied ÷ direct: mean %.2fx, p50 %.2fx, p99 %.2fx (target ≤ 1.1x)\n", M["toolgate-denied"] / M["direct"], P["toolgate-denied"] / P["direct"], Q["toolgate-denied"] / Q["direct"]
	printf "disk − memory: mean %+.1f µs, p50 %+.1f µs (target ≤ +10 µs)\n", (M["toolgate-disk"] - M["toolgate"]) / 1000, (P["toolgate-disk"] - P["toolgate"]) / 1000
}' "$out"
# The same ratio within each round (its paths ran minutes apart at most),
# which the machine's slower drift does not reach.
echo
awk '{ v[$1, $2, 3] = $3; v[$1, $2, 4] = $4; v[$1, $2, 5] = $5; r[$1] = 1 }
END {
	for (i = 1; i in r; i++) {
		printf "round %d, toolgate adds ÷ relay.c adds:", i
		split("mean p50 p99", name, " ")
		for (f = 3; f <= 5; f++)
			printf " %s %.2fx", name[f - 2], (v[i, "toolgate", f] - v[i, "direct", f]) / (v[i, "relay", f] - v[i, "direct", f])
		print ""
	}
}' "$out"
