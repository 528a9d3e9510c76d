#!/usr/bin/env bash
# The test command (README.md): installs what the tests need, then runs
# every test of the workspace in release mode (guests run long).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is required (install Rust with rustup)" >&2
    exit 1
fi
# The Linux boot tests (tests/linux.rs) need Debian's i386 kernel and a
# busybox initramfs.
./scripts/fetch-linux.sh
cargo test --release --workspace
# The OS microbenchmark suite end to end (gcc-multilib, the programs in the
# guest, the runner and its files), with tiny sizes and one run: a check
# that it works, not a measurement.
RUNS=1 QEMU=none OUT=target/bench-smoke TIMEOUT=600 \
    SIZES="countprimes=100000 fib=24 getppid=20000 forkwait=50 memsweep=1" \
    benches/suite.sh
for f in suite.txt suite.csv suite.json suite.svg; do
    [ -s "target/bench-smoke/$f" ] || { echo "scripts/test.sh: no target/bench-smoke/$f" >&2; exit 1; }
done
