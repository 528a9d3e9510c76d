#!/bin/sh
# /init of the initramfs built by scripts/fetch-linux.sh (busybox sh).
#
# The kernel command line picks what it does:
#   bt86.run=test   the boot test's commands, then reboot
#   bt86.run=CMD    run /bin/CMD (a benchmark), then reboot
#   (nothing)       an interactive shell on the console; reboot when it exits
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "bt86-init: up"

run=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        bt86.run=*) run=${arg#bt86.run=} ;;
    esac
done

case "$run" in
    test)
        echo "uname: $(uname -s -r -m)"
        grep -E '^(vendor_id|model name|flags|cpu MHz|bogomips)' /proc/cpuinfo
        echo "written in tmpfs" >/tmp/file
        echo "read back: $(cat /tmp/file)"
        n=0
        for i in $(seq 1 50); do
            n=$((n + $(/bin/true && echo 1)))
        done
        echo "fork/exec loop: $n"
        echo "--- dmesg"
        dmesg
        echo "--- end of dmesg"
        echo "bt86-init: done"
        ;;
    "")
        echo "bt86-init: shell (exit to reboot)"
        setsid cttyhack sh
        ;;
    *)
        "/bin/$run"
        echo "bt86-init: done"
        ;;
esac
reboot -f
