#!/bin/sh
# PID 1 of a booted board (after the initramfs): mounts, loopback and user-mode network, the
# modules CRIU and containers need, then sshd under tini (which reaps orphans).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname "$(cat /etc/hostname)"
for m in inet_diag tcp_diag udp_diag unix_diag netlink_diag af_packet_diag tun veth nf_tables; do
    modprobe -q "$m" || echo "board-init: modprobe $m failed"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /run/sshd
echo "hexo-board: starting sshd"
exec /usr/bin/tini -s -- /usr/sbin/sshd -D -e
