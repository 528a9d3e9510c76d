#!/usr/bin/env bash
# Linux boot time: from the start of the emulator to the first line the
# initramfs's /init prints ("bt86-init: up"), for Debian's i386 686
# kernel and the busybox initramfs of scripts/fetch-linux.sh, under bt86
# and under qemu-system-i386 with TCG, both with -m 256M and the same
# command line. Prints each run and the median of each system.
#
# Usage: benches/linux-boot.sh
#
# Environment:
#   RUNS=5         runs per system (the median is reported)
#   APPEND=...     extra kernel options (default: none, so the APICs are used;
#                  "noapic nolapic acpi=off" for the PIC-only machine)
#   BT86=PATH      the bt86 binary (default: build target/release/bt86)
#   QEMU=PATH      the QEMU binary (default qemu-system-i386 from PATH;
#                  QEMU=none skips it)
#   TIMEOUT=120    seconds before a run is given up
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RUNS=${RUNS:-5}
TIMEOUT=${TIMEOUT:-120}
APPEND="console=ttyS0 ${APPEND:-}"

"$ROOT/scripts/fetch-linux.sh" >/dev/null || exit 1
KERNEL=$ROOT/target/linux/bzImage
INITRD=$ROOT/target/linux/initrd.gz

if [ -z "${BT86:-}" ]; then
    (cd "$ROOT" && cargo build --release -q) || exit 1
    BT86=${CARGO_TARGET_DIR:-$ROOT/target}/release/bt86
fi
QEMU=${QEMU:-$(command -v qemu-system-i386 || echo none)}

# Seconds from starting "$@" to the first "bt86-init: up" on its output.
time_to_init() {
    python3 - "$TIMEOUT" "$@" <<'EOF'
import subprocess, sys, time
timeout = float(sys.argv[1])
start = time.monotonic()
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
seen = b""
result = None
while time.monotonic() - start < timeout:
    chunk = p.stdout.read1(4096)
    if not chunk:
        break
    seen += chunk
    if b"bt86-init: up" in seen:
        result = time.monotonic() - start
        break
p.kill()
p.wait()
print(f"{result:.3f}" if result is not None else "fail")
EOF
}

median() {
    sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "fail"; else print a[int((NR+1)/2)]}'
}

run_system() {
    local name=$1
    shift
    local times=()
    for i in $(seq 1 "$RUNS"); do
        t=$(time_to_init "$@")
        echo "$name run $i: $t s" >&2
        [ "$t" != fail ] && times+=("$t")
    done
    printf '%s\n' "${times[@]}" | median
}

bt86_s=$(run_system bt86 "$BT86" run --kernel "$KERNEL" --initrd "$INITRD" -m 256M \
    --no-reboot --append "$APPEND")
echo "bt86: $bt86_s s (median of $RUNS)"
if [ "$QEMU" != none ]; then
    qemu_s=$(run_system qemu "$QEMU" -accel tcg -kernel "$KERNEL" -initrd "$INITRD" -m 256M \
        -nographic -no-reboot -append "$APPEND")
    echo "qemu-system-i386 (TCG): $qemu_s s (median of $RUNS)"
    if [ "$bt86_s" != fail ] && [ "$qemu_s" != fail ]; then
        awk -v b="$bt86_s" -v q="$qemu_s" 'BEGIN {printf "bt86 takes %.2fx the time of QEMU\n", b / q}'
    fi
fi
