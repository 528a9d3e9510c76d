#!/usr/bin/env bash
# MMU microbenchmarks (benches/guests/mmu.c): a multiboot guest that turns
# on 32-bit paging itself and times seven loops (random page access,
# self-modifying code, #PF round trip, PTE rewrite + invlpg, CR3 reload +
# 8 touches, CR3 switch between two address spaces + 8 touches,
# memsweep), run under bt86 and under QEMU's TCG; the loops that
# need no privilege (random, smc, memsweep) also run natively as a static
# i386 Linux program built from the same object. Prints ns per iteration
# (median of RUNS runs) per system and the ratios.
#
# Usage: benches/mmu.sh [LOOP]     (LOOP: random smc pf invlpg cr3 cr3switch memsweep; default all)
#
# Environment:
#   RUNS=3            runs per system (the median is reported)
#   SCALE=100         iteration counts in percent of the defaults in mmu.c
#   SWEEPS=3          memsweep: sweeps over the 32 MiB array
#   NOPAGING=1        also run the guest with paging=0 (random, smc and
#                     memsweep with paging off) under QEMU and bt86; 0: don't
#   BT86=PATH         use this bt86 binary instead of building target/release/bt86
#                     (the build honours CARGO_TARGET_DIR)
#   QEMU=PATH         the QEMU binary (default: qemu-system-i386 from PATH;
#                     QEMU=none skips it)
#   INSTALL_QEMU=1    apt-get install qemu-system-x86 if it is missing
#   TIMEOUT=300       seconds before a guest run is killed
#
# A system that fails (bt86 before its shadow MMU lands: "unsupported:
# paging") is reported and skipped; the others go on. The loops a failed
# run completed before it failed are still counted.
#
# Exit status: 0 if every system that ran completed every run with bad=0
# and the same check values as the others; 1 otherwise.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SRC=$HERE/guests
OUT=$SRC/build
RUNS=${RUNS:-3}
SCALE=${SCALE:-100}
SWEEPS=${SWEEPS:-3}
NOPAGING=${NOPAGING:-1}
TIMEOUT=${TIMEOUT:-300}
QEMU=${QEMU:-qemu-system-i386}

ALL_LOOPS=(random smc pf invlpg cr3 cr3switch memsweep)
NATIVE_LOOPS=" random smc memsweep "
# QEMU 7.2 TCG on the AMD EPYC VM this was written on (ns/iteration, medians of 5 runs).
declare -A QEMU_REF=([random]=229 [smc]=8200 [pf]=1190 [invlpg]=365 [cr3]=3330 [memsweep]=121)

# The same flags as run.sh's guests (integer code only), plus no
# memset/memcpy idioms (the guest links no libc).
CFLAGS=(-m32 -O2 -fno-pic -fno-pie -fno-stack-protector -mno-sse -mno-mmx -mno-80387
    -fcf-protection=none -fno-asynchronous-unwind-tables -Wall -Wextra -Werror)

say() { printf '%s\n' "$*" >&2; }
die() { say "mmu.sh: $*"; exit 1; }

FAILED=0
fail() { say "FAIL: $*"; FAILED=1; }

# shellcheck source=lib.sh
. "$HERE/lib.sh"

# --- building -----------------------------------------------------------------

build_guest() {
    mkdir -p "$OUT" || return 1
    # One object holds the loops (and the guest code); the guest and the Linux
    # program both link it, so both time the same bytes.
    gcc "${CFLAGS[@]}" -ffreestanding -fno-tree-loop-distribute-patterns -c "$SRC/mmu.c" -o "$OUT/mmu.o" &&
        gcc -m32 -c "$SRC/mb_start.S" -o "$OUT/mb_start.o" &&
        ld -m elf_i386 -T "$SRC/link.ld" -o "$OUT/mmu.elf" "$OUT/mb_start.o" "$OUT/mmu.o" &&
        gcc -m32 -O2 -Wall -Wextra -Werror -DMMU_LINUX -c "$SRC/mmu.c" -o "$OUT/mmu_linux.o" &&
        gcc -m32 -static -no-pie -o "$OUT/mmu.linux" "$OUT/mmu_linux.o" "$OUT/mmu.o" || return 1
    local undef
    undef=$(nm -u "$OUT/mmu.o")
    [ -z "$undef" ] || { say "mmu.o needs symbols the guest does not have: $undef"; return 1; }
}

build_bt86() {
    if [ -n "${BT86:-}" ]; then
        [ -x "$BT86" ] || { say "   BT86=$BT86 is not an executable"; BT86=; }
        return
    fi
    if ! (cd "$ROOT" && cargo build --release --bin bt86 >&2); then
        say "   cargo build failed: bt86 is skipped"
        BT86=
        return
    fi
    BT86=${CARGO_TARGET_DIR:-$ROOT/target}/release/bt86
    [ -x "$BT86" ] || { say "   cargo did not produce $BT86"; BT86=; }
}

# --- running ------------------------------------------------------------------

field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A CYC ITERS CHECK
declare -A DEAD # system -> why it stopped
SYSTEMS=()

# Records the result lines of one run of system $1 (output in $2); checks bad= and check=.
record() {
    local sys=$1 out=$2 line name iters check bad cycles key
    while read -r line; do
        case $line in mmu=*) ;; *) continue ;; esac
        name=$(field "$line" mmu)
        iters=$(field "$line" iters)
        check=$(field "$line" check)
        bad=$(field "$line" bad)
        cycles=$(field "$line" cycles)
        key="$sys:$name"
        if [ "$bad" != 0 ]; then
            fail "$sys: $name: bad=$bad (wrong values inside the loop): '$line'"
            continue
        fi
        # Every system and run must compute the same check value per loop.
        if [ -n "${CHECK[$name]:-}" ] && [ "${CHECK[$name]}" != "$check" ]; then
            fail "$sys: $name: check=$check, but ${CHECK_FROM[$name]} gave ${CHECK[$name]}"
            continue
        fi
        CHECK[$name]=$check
        CHECK_FROM[$name]=$sys
        ITERS[$key]=$iters
        CYC[$key]="${CYC[$key]:-} $cycles"
    done <<<"$out"
}
declare -A CHECK_FROM

# Runs system $1 once: $2 is the expected exit status, the rest the command.
run_one() {
    local sys=$1 want=$2 out err rc=0
    shift 2
    [ -z "${DEAD[$sys]:-}" ] || return
    err=$(mktemp)
    out=$(timeout "$TIMEOUT" "$@" 2>"$err") || rc=$?
    record "$sys" "$out"
    if [ "$rc" -ne "$want" ] || ! printf '%s\n' "$out" | grep -q '^mmu_done'; then
        local why="exit status $rc"
        [ "$rc" -eq 124 ] && why="timed out after ${TIMEOUT}s"
        DEAD[$sys]=$why
        say "   $sys FAILED ($why); it is skipped from now on"
        say "     command: $(printf '%q ' "$@")"
        printf '%s\n' "$out" | grep -v '^$' | sed 's/^/     stdout: /' | tail -n 8 >&2
        sed 's/^/     stderr: /' "$err" | tail -n 8 >&2
        FAILED=1
    fi
    rm -f "$err"
}

# --- main -----------------------------------------------------------------------

LOOPS=("$@")
[ ${#LOOPS[@]} -gt 0 ] || LOOPS=("${ALL_LOOPS[@]}")
[ ${#LOOPS[@]} -le 1 ] || [ $# -eq 0 ] || die "give one loop or none"
for l in "${LOOPS[@]}"; do
    case " ${ALL_LOOPS[*]} " in *" $l "*) ;; *) die "no loop '$l' (loops: ${ALL_LOOPS[*]})" ;; esac
done

ensure_toolchain
ensure_qemu
say "== building the guest and the native program into $OUT"
build_guest || die "building the guest failed"
if [ -n "${BT86:-}" ]; then say "== bt86: $BT86"; else say "== building bt86 (release)"; fi
build_bt86

TSC_KHZ=$(field "$("$OUT/mmu.linux" calibrate=1)" tsc_khz)
[ -n "$TSC_KHZ" ] && [ "$TSC_KHZ" -gt 0 ] || die "could not measure the TSC rate"
say "== TSC: $TSC_KHZ kHz (against CLOCK_MONOTONIC)"

ARGS="tsc_khz=$TSC_KHZ scale=$SCALE sweeps=$SWEEPS"
[ $# -eq 0 ] || ARGS="$ARGS only=$1"
native_wanted=0
for l in "${LOOPS[@]}"; do
    case $NATIVE_LOOPS in *" $l "*) native_wanted=1 ;; esac
done

QEMU_CMD=("$QEMU" -accel tcg -m 128 -nodefaults -display none -no-reboot
    -debugcon stdio -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$OUT/mmu.elf")
BT86_CMD=("$BT86" run -m 128 --serial none --kernel "$OUT/mmu.elf")

[ "$native_wanted" = 0 ] || SYSTEMS+=(native)
[ -z "$QEMU" ] || SYSTEMS+=(qemu)
[ -z "$BT86" ] || SYSTEMS+=(bt86)
if [ "$NOPAGING" = 1 ]; then
    [ -z "$QEMU" ] || SYSTEMS+=(qemu-nopg)
    [ -z "$BT86" ] || SYSTEMS+=(bt86-nopg)
fi
[ -n "$BT86" ] || say "== bt86: not available (see above)"

say "== $RUNS runs of: ${SYSTEMS[*]} (guest command line: $ARGS)"
for ((i = 1; i <= RUNS; i++)); do
    say "   run $i"
    for sys in "${SYSTEMS[@]}"; do
        case $sys in
        # shellcheck disable=SC2086 # ARGS are words
        native) run_one native 0 "$OUT/mmu.linux" $ARGS ;;
        qemu) run_one qemu 1 "${QEMU_CMD[@]}" -append "$ARGS" ;;
        qemu-nopg) run_one qemu-nopg 1 "${QEMU_CMD[@]}" -append "$ARGS paging=0" ;;
        bt86) run_one bt86 1 "${BT86_CMD[@]}" --append "$ARGS" ;;
        bt86-nopg) run_one bt86-nopg 1 "${BT86_CMD[@]}" --append "$ARGS paging=0" ;;
        esac
    done
done

# Every run's ns/iteration, for the spread.
for l in "${LOOPS[@]}"; do
    for sys in "${SYSTEMS[@]}"; do
        [ -n "${CYC[$sys:$l]:-}" ] || continue
        # shellcheck disable=SC2086 # a list of numbers
        say "   $(printf '%-9s %-10s' "$l" "$sys") ns/iter: $(printf '%s\n' ${CYC[$sys:$l]} | awk -v n="${ITERS[$sys:$l]}" -v k="$TSC_KHZ" '{ printf "%.2f ", $1 * 1e6 / k / n }')"
    done
done

# --- the table ------------------------------------------------------------------

# Median ns/iteration of system $1 on loop $2, or "-".
ns() {
    local key="$1:$2" c
    [ -n "${CYC[$key]:-}" ] || { echo -; return; }
    # shellcheck disable=SC2086 # a list of numbers
    c=$(median ${CYC[$key]})
    awk -v c="$c" -v n="${ITERS[$key]}" -v k="$TSC_KHZ" 'BEGIN { printf "%.2f", c * 1e6 / k / n }'
}
ratio() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; fi; }

echo
rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')
echo "mmu.sh: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), TSC $TSC_KHZ kHz; median of $RUNS runs; guest: $ARGS"
[ -z "$BT86" ] || echo "bt86: $BT86 ($("$BT86" --version 2>/dev/null | awk '{ print $2 }'), tree $rev$( [ -n "$(cd "$ROOT" && git status --porcelain -- src runtime translator 2>/dev/null)" ] && echo '+changes'))"
[ -z "$QEMU" ] || echo "qemu: $("$QEMU" --version | head -n1) -accel tcg"
echo "ns per iteration (guest rdtsc cycles / TSC rate; QEMU's and bt86's guest TSC run at the host rate)."
echo "-nopg: the same guest with paging=0 (paging never turned on). qemu ref: QEMU 7.2 TCG (paging on) when mmu.sh was written (AMD EPYC VM)."
echo
cols=(native qemu bt86)
[ "$NOPAGING" != 1 ] || cols+=(qemu-nopg bt86-nopg)
fmt="%-9s %13s"
header=(loop iterations)
for c in "${cols[@]}"; do
    fmt="$fmt %10s"
    header+=("$c")
done
fmt="$fmt %11s %11s %11s %9s\n"
header+=(bt86/qemu bt86/native qemu/native "qemu ref")
# shellcheck disable=SC2059 # the format is built above
printf "$fmt" "${header[@]}"
for l in "${LOOPS[@]}"; do
    row=("$l")
    iters=-
    for c in "${cols[@]}"; do
        [ -z "${ITERS[$c:$l]:-}" ] || iters=${ITERS[$c:$l]}
    done
    row+=("$iters")
    declare -A V=()
    for c in "${cols[@]}"; do
        V[$c]=$(ns "$c" "$l")
        row+=("${V[$c]}")
    done
    row+=("$(ratio "${V[bt86]}" "${V[qemu]}")" "$(ratio "${V[bt86]}" "${V[native]}")" "$(ratio "${V[qemu]}" "${V[native]}")" "${QEMU_REF[$l]:--}")
    # shellcheck disable=SC2059
    printf "$fmt" "${row[@]}"
done
echo
for l in "${LOOPS[@]}"; do
    [ -z "${CHECK[$l]:-}" ] || printf '%s check=%s  ' "$l" "${CHECK[$l]}"
done
echo
for sys in "${SYSTEMS[@]}"; do
    [ -z "${DEAD[$sys]:-}" ] || echo "$sys: FAILED (${DEAD[$sys]}) - see the messages above; its columns hold only the loops it completed"
done
[ -n "$QEMU" ] || echo "qemu: not run (not installed)"
[ -n "$BT86" ] || echo "bt86: not run (no binary)"

if [ "$FAILED" -ne 0 ]; then
    say
    say "mmu.sh: some runs FAILED (see above)"
    exit 1
fi
