#!/usr/bin/env bash
# The OS microbenchmark suite: countPrimes, recursive fib, a getppid()
# loop, a fork()+wait() loop and memsweep, built from benches/guests as
# static i386 programs, run natively, inside Debian's i386 Linux under bt86
# and, when it is installed, inside the same guest under qemu-system-i386
# with TCG. The programs time themselves, so boot time is excluded; each
# figure is the median of RUNS runs.
#
# Usage: benches/suite.sh [BENCH...]     (default: all five)
#
# Environment:
#   RUNS=5            runs of each benchmark on each system
#   OUT=DIR           where suite.txt, suite.csv, suite.json and suite.svg go
#                     (default: target/bench-suite)
#   QEMU=NAME|none    the QEMU binary (default qemu-system-i386; skipped if
#                     missing); INSTALL_QEMU=1 installs qemu-system-x86
#   BT86=PATH         measure this bt86 binary (default: cargo build --release)
#   SIZES="fib=35 memsweep=2"   problem sizes (default: each program's own)
#   TIMEOUT=3600      seconds one guest boot (all its runs) may take
#
# Installs gcc-multilib when gcc cannot build static i386 programs, and the
# guest kernel and busybox with scripts/fetch-linux.sh. Exits non-zero if a
# build or a run fails, or if the systems disagree on a result; the speed
# targets are reported, not enforced.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SRC=$HERE/guests
RUNS=${RUNS:-5}
OUT=${OUT:-$ROOT/target/bench-suite}
QEMU=${QEMU:-qemu-system-i386}
TIMEOUT=${TIMEOUT:-3600}
LINUX=$ROOT/target/linux
ALL=(countprimes fib getppid forkwait memsweep)
BENCHES=("${@:-${ALL[@]}}")

say() { printf '%s\n' "$*" >&2; }
die() { say "suite.sh: $*"; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"

for b in "${BENCHES[@]}"; do
    [[ " ${ALL[*]} " == *" $b "* ]] || die "unknown benchmark $b (one of: ${ALL[*]})"
done

ensure_toolchain
ensure_qemu

say "== building the programs into $OUT/programs"
mkdir -p "$OUT/programs" "$LINUX/extra"
for b in "${ALL[@]}"; do
    src=$SRC/$b.c
    [ -f "$src" ] || src=$SRC/os/$b.c
    gcc -m32 -O2 -static -no-pie -fno-pie -Wall -Wextra -Werror \
        -o "$OUT/programs/bench-$b" "$SRC/linux_harness.c" "$src"
    cp "$OUT/programs/bench-$b" "$LINUX/extra/"
done
cp "$SRC/os/bench-suite.sh" "$LINUX/extra/bench-suite"

say "== the guest: Debian's i386 kernel and an initramfs with the programs"
"$ROOT/scripts/fetch-linux.sh" >&2

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${BT86:-}" ]; then
    say "== building bt86 (release)"
    (cd "$ROOT" && cargo build --release -q --bin bt86)
    BT86=$TARGET/release/bt86
fi
say "== building the suite runner (release)"
(cd "$ROOT" && cargo build --release -q -p bt86-benches --bin suite)

sizes=()
for s in ${SIZES:-}; do
    sizes+=(--size "$s")
done
only=$(IFS=,; echo "${BENCHES[*]}")
say "== $RUNS runs of: $only (native, bt86${QEMU:+, $QEMU})"
exec "$TARGET/release/suite" --programs "$OUT/programs" --kernel "$LINUX/bzImage" \
    --initrd "$LINUX/initrd.gz" --bt86 "$BT86" --qemu "${QEMU:-none}" --runs "$RUNS" \
    --only "$only" --out "$OUT" --timeout "$TIMEOUT" "${sizes[@]}"
