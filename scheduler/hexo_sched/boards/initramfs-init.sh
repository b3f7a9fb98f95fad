#!/bin/sh
# PID 1 of the board's initramfs: load the drivers of the root disk, mount it, hand over to the
# init named by hexo.init= on the kernel command line.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in $(/bin/busybox cat /modules.order); do
    /bin/busybox insmod "/modules/$m" || echo "initramfs: insmod $m failed"
done
target=/sbin/hexo-board-init
for word in $(/bin/busybox cat /proc/cmdline); do
    case "$word" in hexo.init=*) target="${word#hexo.init=}" ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do /bin/busybox sleep 0.1; i=$((i + 1)); done
if ! /bin/busybox mount -t ext4 -o rw /dev/vda /newroot; then
    echo "initramfs: cannot mount /dev/vda"; echo o > /proc/sysrq-trigger
fi
/bin/busybox umount /dev /sys /proc
exec /bin/busybox switch_root /newroot "$target"
