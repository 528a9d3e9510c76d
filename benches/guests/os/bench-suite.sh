#!/bin/sh
# The guest side of benches/suite.sh, installed in the initramfs as
# /bin/bench-suite and started by /init through bt86.run=bench-suite.
#
# Kernel command-line options:
#   bench.runs=N          runs of each benchmark (default 5)
#   bench.only=A,B        these benchmarks only (default: all five)
#   bench.n.NAME=N        problem size of benchmark NAME (default: its own)
#
# Runs the benchmarks in turns (each once per round, N rounds), so that a
# slow phase of the host spreads over all of them; each prints its
# result line (see linux_harness.c), then "bench-suite: done".
runs=5
only="countprimes fib getppid forkwait memsweep"
sizes=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bench.runs=*) runs=${arg#bench.runs=} ;;
        bench.only=*) only=$(echo "${arg#bench.only=}" | tr , ' ') ;;
        bench.n.*=*) sizes="$sizes ${arg#bench.n.}" ;;
    esac
done
size_of() {
    for s in $sizes; do
        case "$s" in "$1="*) echo "${s#*=}"; return ;; esac
    done
}
for round in $(seq 1 "$runs"); do
    for b in $only; do
        "/bin/bench-$b" $(size_of "$b") || echo "bench=$b failed status=$?"
    done
done
echo "bench-suite: done"
