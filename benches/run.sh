#!/usr/bin/env bash
# bt86 benchmarks: countPrimes, recursive fib, an x87 loop and an SSE2
# loop, in C, built once as
# multiboot guests and once as static i386 Linux programs, run natively and
# under bt86; prints the median times (guest rdtsc cycles and seconds) and
# the bt86/native ratio.
#
# Usage: benches/run.sh [BENCH...]        (default: countprimes fib x87 sse2)
#
# Environment:
#   RUNS=5            runs per benchmark and side (the median is reported)
#   BT86=PATH         use this bt86 binary instead of building target/release/bt86
#   BT86_TIMEOUT=300  seconds before a bt86 run is killed
#   COUNTPRIMES_N=N, FIB_N=N, X87_N=N, SSE2_N=N   problem sizes (defaults are in the C sources)
#
# Exit status: 0 if every run of every guest printed the reference result
# (the same one natively and under bt86); 1 otherwise (a guest crashed, hit
# an unsupported instruction, printed a wrong result, or the build failed).
# The speed targets are reported, not enforced.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SRC=$HERE/guests
OUT=$SRC/build
RUNS=${RUNS:-5}
BT86_TIMEOUT=${BT86_TIMEOUT:-300}

# Reference results, keyed by "bench:n".
declare -A REFERENCE=(
    [countprimes:1000000]=78498
    [countprimes:2000000]=148933
    [countprimes:3000000]=216816
    [countprimes:5000000]=348513
    [countprimes:10000000]=664579
    [fib:30]=832040
    [fib:32]=2178309
    [fib:35]=9227465
    [fib:38]=39088169
    [fib:40]=102334155
    [fib:42]=267914296
)
# Targets of the project's issue, and what QEMU's TCG measures.
declare -A TARGET=([countprimes]=1.10 [fib]=2.5 [x87]=1.3 [sse2]=1.3)
declare -A QEMU=([countprimes]=2.4 [fib]=7.4 [x87]=55)

# The benchmark objects are compiled once with these flags and linked into
# both builds: integer code only, except where a benchmark adds its FPU.
CFLAGS=(-m32 -O2 -fno-pic -fno-pie -fno-stack-protector -mno-sse -mno-mmx -mno-80387
    -fcf-protection=none -fno-asynchronous-unwind-tables -Wall -Wextra -Werror)
declare -A BENCH_CFLAGS=([x87]="-m80387 -mfpmath=387" [sse2]="-msse2 -mfpmath=sse")

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 1; }

# shellcheck source=lib.sh
. "$HERE/lib.sh"

# --- building --------------------------------------------------------------

build_guests() {
    mkdir -p "$OUT"
    gcc "${CFLAGS[@]}" -ffreestanding -c "$SRC/mb_harness.c" -o "$OUT/mb_harness.o"
    gcc -m32 -c "$SRC/mb_start.S" -o "$OUT/mb_start.o"
    gcc "${CFLAGS[@]}" -c "$SRC/linux_harness.c" -o "$OUT/linux_harness.o"
    local b
    for b in "${BENCHES[@]}"; do
        # One object, linked into both builds: both time the same bytes.
        # shellcheck disable=SC2086 # the per-benchmark flags are words
        gcc "${CFLAGS[@]}" ${BENCH_CFLAGS[$b]:-} -ffreestanding -c "$SRC/$b.c" -o "$OUT/$b.o"
        ld -m elf_i386 -T "$SRC/link.ld" -o "$OUT/$b.elf" "$OUT/mb_start.o" "$OUT/mb_harness.o" "$OUT/$b.o"
        gcc -m32 -static -no-pie -o "$OUT/$b.linux" "$OUT/linux_harness.o" "$OUT/$b.o"
        check_same_code "$b"
    done
}

# The raw bytes of function $2 in binary $1 (relative branches and calls
# within the function are position independent, so equal bytes mean equal code).
function_bytes() {
    objdump -d --disassemble="$2" "$1" | awk -F'\t' '/^ *[0-9a-f]+:\t/ { gsub(/ +$/, "", $2); printf "%s ", $2 } END { print "" }'
}

# Offsets (from the function's start) of the 4-byte fields the linker fills
# in (absolute addresses of data) in function $2 of object $1.
reloc_offsets() {
    local obj=$1 f=$2 start size off
    read -r start size < <(nm -S --defined-only "$obj" | awk -v f="$f" '$4 == f { print $1, $2 }')
    objdump -r -j .text "$obj" | awk '/^[0-9a-f]+ / { print $1 }' | while read -r off; do
        off=$((16#$off - 16#$start))
        if [ "$off" -ge 0 ] && [ "$off" -lt $((16#$size)) ]; then
            echo "$off"
        fi
    done
}

# Checks that every function of the benchmark object is byte-identical in the
# multiboot guest and in the Linux program, but for the data addresses the
# linker put in (the same object is linked into both).
check_same_code() {
    local b=$1 f addrs=()
    local funcs
    funcs=$(nm --defined-only "$OUT/$b.o" | awk '$2 ~ /^[Tt]$/ { print $3 }')
    [ -n "$funcs" ] || die "$b.o defines no functions"
    for f in $funcs; do
        local x y o i
        read -r -a x <<<"$(function_bytes "$OUT/$b.elf" "$f")"
        read -r -a y <<<"$(function_bytes "$OUT/$b.linux" "$f")"
        [ ${#x[@]} -gt 0 ] || die "$f not found in $b.elf"
        for o in $(reloc_offsets "$OUT/$b.o" "$f"); do
            for ((i = o; i < o + 4; i++)); do
                x[i]=..
                y[i]=..
            done
        done
        [ "${x[*]}" = "${y[*]}" ] || die "$f differs between $b.elf and $b.linux:
  elf:   ${x[*]}
  linux: ${y[*]}"
        addrs+=("$f@$(nm "$OUT/$b.elf" | awk -v f="$f" '$3 == f { print $1 }')/$(nm "$OUT/$b.linux" | awk -v f="$f" '$3 == f { print $1 }')")
    done
    say "   $b: identical code in both builds: ${addrs[*]} (guest/linux address)"
}

build_bt86() {
    if [ -n "${BT86:-}" ]; then
        [ -x "$BT86" ] || die "BT86=$BT86 is not an executable"
        BT86_IS_OVERRIDE=1
        return
    fi
    (cd "$ROOT" && cargo build --release --bin bt86 >&2)
    BT86=${CARGO_TARGET_DIR:-$ROOT/target}/release/bt86
    [ -x "$BT86" ] || die "cargo did not produce $BT86"
}

# --- running ---------------------------------------------------------------

# The value of key $2 in result line $1 ("... key=value ...").
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
minimum() { printf '%s\n' "$@" | sort -n | head -n1; }
now_ns() { date +%s%N; }

FAILED=0
fail() { say "FAIL: $*"; FAILED=1; }

# Checks one result line and sets R (result) and C (cycles), or fails.
check_line() {
    local b=$1 side=$2 line=$3 n=$4
    R=$(field "$line" result)
    C=$(field "$line" cycles)
    if [ "$(field "$line" bench)" != "$b" ] || [ -z "$R" ] || [ -z "$C" ] || [ "$(field "$line" n)" != "$n" ]; then
        fail "$b ($side): unexpected output: '$line'"
        return 1
    fi
}

run_bench() {
    local b=$1
    local var n_arg=() n
    var=$(printf '%s_N' "$b" | tr '[:lower:]' '[:upper:]')
    if [ -n "${!var:-}" ]; then
        n_arg=("${!var}")
    fi

    local nat_c=() nat_ns=() bt_c=() bt_wall=() results=() i line out err rc t0 t1
    for ((i = 0; i < RUNS; i++)); do
        # Natively.
        if ! line=$("$OUT/$b.linux" "${n_arg[@]}"); then
            fail "$b (native) failed"
            return
        fi
        n=$(field "$line" n)
        check_line "$b" native "$line" "$n" || return
        results+=("$R")
        nat_c+=("$C")
        nat_ns+=("$(field "$line" ns)")

        # Under bt86 (exit status 1 = isa-debug-exit with 0).
        err=$(mktemp)
        t0=$(now_ns)
        rc=0
        out=$(timeout "$BT86_TIMEOUT" "$BT86" run --kernel "$OUT/$b.elf" --append "${n_arg[*]}" 2>"$err") || rc=$?
        t1=$(now_ns)
        if [ "$rc" -ne 1 ]; then
            local why="exit status $rc"
            [ "$rc" -eq 124 ] && why="timed out after ${BT86_TIMEOUT}s"
            fail "$b (bt86): $why; stdout: '$out'; stderr: '$(cat "$err")'"
            say "  investigate with: objdump -d $OUT/$b.elf; RUST_LOG=bt86::jit=trace $BT86 run --kernel $OUT/$b.elf"
            rm -f "$err"
            return
        fi
        rm -f "$err"
        line=$(printf '%s\n' "$out" | grep '^bench=' | tail -n1 || true)
        check_line "$b" bt86 "$line" "$n" || return
        results+=("$R")
        bt_c+=("$C")
        bt_wall+=("$((t1 - t0))")
    done

    # Correctness: every run, native and bt86, gave the same (reference) result.
    local ref=${REFERENCE[$b:$n]:-} distinct
    distinct=$(printf '%s\n' "${results[@]}" | sort -u)
    if [ "$(printf '%s\n' "$distinct" | wc -l)" -ne 1 ]; then
        fail "$b n=$n: results differ between runs/sides: $(printf '%s ' "${results[@]}")"
        return
    fi
    if [ -n "$ref" ] && [ "$distinct" != "$ref" ]; then
        fail "$b n=$n: result $distinct, expected $ref"
        return
    fi
    [ -n "$ref" ] || say "   $b n=$n: no reference value; native and bt86 agree on $distinct"

    say "   native cycles: ${nat_c[*]}"
    say "   bt86 cycles:   ${bt_c[*]}"
    ROWS+=("$b $n $distinct $(median "${nat_c[@]}") $(median "${nat_ns[@]}") $(median "${bt_c[@]}") $(median "${bt_wall[@]}") $(minimum "${nat_c[@]}") $(minimum "${bt_c[@]}")")
    # TSC rate samples (cycles per ns) from the native runs.
    for ((i = 0; i < ${#nat_c[@]}; i++)); do
        RATES+=("$(awk -v c="${nat_c[i]}" -v t="${nat_ns[i]}" 'BEGIN { printf "%.6f", c / t }')")
    done
}

# --- main ------------------------------------------------------------------

BENCHES=("$@")
[ ${#BENCHES[@]} -gt 0 ] || BENCHES=(countprimes fib x87 sse2)
for b in "${BENCHES[@]}"; do
    [ -f "$SRC/$b.c" ] || die "no benchmark '$b' (no $SRC/$b.c)"
done

ensure_toolchain
say "== building guests into $OUT"
build_guests
say "== building bt86 (release)"
build_bt86

ROWS=()
RATES=()
for b in "${BENCHES[@]}"; do
    say "== $b: $RUNS runs natively and under bt86"
    run_bench "$b"
done

if [ ${#ROWS[@]} -gt 0 ]; then
    ghz=$(median "${RATES[@]}")
    echo
    rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')
    if [ -z "${BT86_IS_OVERRIDE:-}" ] && [ -n "$(cd "$ROOT" && git status --porcelain -- src runtime translator Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        rev="$rev+uncommitted changes"
    fi
    [ -z "${BT86_IS_OVERRIDE:-}" ] || rev="$BT86"
    echo "bt86 $("$BT86" --version 2>/dev/null | awk '{ print $2 }') ($rev), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), TSC $(awk -v g="$ghz" 'BEGIN { printf "%.3f", g }') GHz (from the native runs); median of $RUNS runs"
    echo "cycles: guest rdtsc around bench_run(n) (bt86's guest TSC runs at the host rate); s = cycles / TSC rate"
    echo "bt86 proc s: wall time of the whole bt86 process (load, translation, exit)"
    echo "ratio: median bt86 cycles / median native cycles; best: fastest bt86 run / fastest native run"
    echo
    printf '%s\n' "${ROWS[@]}" | awk -v ghz="$ghz" -v tgt="$(for k in "${!TARGET[@]}"; do printf '%s=%s,' "$k" "${TARGET[$k]}"; done)" \
        -v qemu="$(for k in "${!QEMU[@]}"; do printf '%s=%s,' "$k" "${QEMU[$k]}"; done)" '
        BEGIN {
            n = split(tgt, a, ","); for (i = 1; i <= n; i++) if (split(a[i], kv, "=") == 2) T[kv[1]] = kv[2]
            n = split(qemu, a, ","); for (i = 1; i <= n; i++) if (split(a[i], kv, "=") == 2) Q[kv[1]] = kv[2]
            fmt = "%-12s %8s %10s %14s %9s %14s %9s %11s %7s %7s %-12s %5s\n"
            printf fmt, "benchmark", "n", "result", "native cycles", "native s", "bt86 cycles", "bt86 s", "bt86 proc s", "ratio", "best", "target", "qemu"
        }
        {
            ratio = $6 / $4
            t = ($1 in T) ? T[$1] : "-"
            verdict = ($1 in T) ? (ratio <= T[$1] ? " ok" : " MISS") : ""
            printf fmt, $1, $2, $3, $4, sprintf("%.3f", $4 / ghz / 1e9), $6, sprintf("%.3f", $6 / ghz / 1e9),
                sprintf("%.3f", $7 / 1e9), sprintf("%.2fx", ratio), sprintf("%.2fx", $9 / $8), (t == "-" ? t : "<=" t "x") verdict, ($1 in Q) ? Q[$1] "x" : "-"
        }'
fi

if [ "$FAILED" -ne 0 ]; then
    say
    say "run.sh: FAILED (see above)"
    exit 1
fi
