#!/usr/bin/env bash
# Fetches Debian's i386 686 kernel (linux-image-686) and busybox-static:i386
# with apt-get and builds an initramfs around them.
#
#   scripts/fetch-linux.sh [DIR]      (default: target/linux)
#
# Leaves DIR/bzImage, DIR/initrd.gz (busybox + /init from
# scripts/linux-init.sh) and DIR/VERSION. Adds the i386 architecture to dpkg
# when it is missing; needs root or sudo for that and for installing cpio.
# Running it again reuses the downloaded packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/linux}
mkdir -p "$out"
out=$(cd "$out" && pwd)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
# A mirror in the middle of a sync fails one index or another; what matters
# is whether the packages are then found.
update() { $sudo apt-get update -q >/dev/null || echo "fetch-linux.sh: apt-get update reported errors" >&2; }

if ! dpkg --print-foreign-architectures | grep -qx i386; then
    $sudo dpkg --add-architecture i386
    update
fi
if ! command -v cpio >/dev/null; then
    $sudo apt-get install -y -q cpio >/dev/null
fi

# linux-image-686 is a metapackage: find the versioned image it depends on.
image=$(apt-cache depends linux-image-686:i386 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-686\)\(:i386\)\?$/\1/p' | head -n1)
if [ -z "$image" ]; then
    update
    image=$(apt-cache depends linux-image-686:i386 |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-686\)\(:i386\)\?$/\1/p' | head -n1)
fi
if [ -z "$image" ]; then
    echo "fetch-linux.sh: no linux-image-*-686 package found for i386" >&2
    exit 1
fi

debs=$out/debs
mkdir -p "$debs"
(
    cd "$debs"
    ls "$image"_*_i386.deb >/dev/null 2>&1 || apt-get download -q "$image:i386"
    ls busybox-static_*_i386.deb >/dev/null 2>&1 || apt-get download -q busybox-static:i386
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$debs/$image"_*_i386.deb "$work/kernel"
cp "$work"/kernel/boot/vmlinuz-* "$out/bzImage"
echo "$image" >"$out/VERSION"

rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,dev,proc,sys,tmp,etc,root}
dpkg-deb -x "$debs"/busybox-static_*_i386.deb "$work/busybox"
cp "$work/busybox/bin/busybox" "$rootfs/bin/busybox"
for applet in sh mount umount cat echo uname ls mkdir rm dmesg reboot poweroff \
    sleep true false grep seq wc cttyhack setsid date hostname; do
    ln -s busybox "$rootfs/bin/$applet"
done
cp "$root/scripts/linux-init.sh" "$rootfs/init"
chmod 755 "$rootfs/init"
# Benchmark programs (issue 7) are added by whoever builds them: any file in
# DIR/extra/ goes to /bin.
if [ -d "$out/extra" ]; then
    cp "$out"/extra/* "$rootfs/bin/"
fi
(cd "$rootfs" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$out/initrd.gz"
echo "fetch-linux.sh: $out/bzImage ($image), $out/initrd.gz"
