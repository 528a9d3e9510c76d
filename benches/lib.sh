# Shell helpers shared by the benchmark scripts (sourced; the script
# defines say and die first).

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

apt_install() {
    command -v apt-get >/dev/null || return 1
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only if installing from the current ones fails.
    as_root apt-get install -y -q "$@" >&2 || { as_root apt-get update -q >&2 && as_root apt-get install -y -q "$@" >&2; }
}

can_build_i386() {
    local t rc
    t=$(mktemp -d) || return 1
    printf '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n' >"$t/t.c"
    gcc -m32 -static -no-pie -o "$t/t" "$t/t.c" >/dev/null 2>&1 && "$t/t" >/dev/null 2>&1
    rc=$?
    rm -rf "$t"
    return $rc
}

# gcc that builds static i386 programs (gcc-multilib, installed if missing).
ensure_toolchain() {
    command -v gcc >/dev/null || die "gcc is not installed"
    can_build_i386 && return
    say "== installing gcc-multilib"
    apt_install gcc-multilib || die "gcc cannot build static i386 programs and gcc-multilib could not be installed"
    can_build_i386 || die "gcc-multilib is installed but gcc -m32 -static still does not work"
}

# QEMU=NAME: kept if it runs, installed when INSTALL_QEMU=1 and it is
# qemu-system-i386, else emptied (QEMU=none skips it).
ensure_qemu() {
    [ "$QEMU" != none ] || { QEMU=; return; }
    if ! command -v "$QEMU" >/dev/null && [ "${INSTALL_QEMU:-0}" = 1 ] && [ "$QEMU" = qemu-system-i386 ]; then
        say "== installing qemu-system-x86"
        apt_install qemu-system-x86 || say "   could not install qemu-system-x86"
    fi
    if ! command -v "$QEMU" >/dev/null; then
        say "== $QEMU not found: QEMU is skipped (INSTALL_QEMU=1 installs qemu-system-x86 with apt-get)"
        QEMU=
    fi
}
