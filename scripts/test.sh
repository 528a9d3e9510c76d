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
