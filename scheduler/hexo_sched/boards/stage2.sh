#!/bin/sh
# Runs once as PID 1 inside qemu-system-aarch64 while the board image is built: debootstrap's
# second stage, then the board's configuration prepared on the host in /hexo-setup.
# Argument-free; the packages the board cannot work without are listed in /hexo-setup/required.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The result line comes last, once the file system is synced and read-only: the host may end
# qemu from outside after it, when the power-off does not (seen with a bookworm kernel).
finish() {
    sync
    mount -o remount,ro / 2>/dev/null
    echo "hexo-stage2: $1"
    echo o > /proc/sysrq-trigger                  # needs /proc: it stays mounted
    while :; do sleep 1; done
}
if ! /debootstrap/debootstrap --second-stage; then
    tail -n 30 /debootstrap/debootstrap.log 2>/dev/null
    echo "hexo-stage2: debootstrap --second-stage reported errors; checking required packages"
fi
for p in $(cat /hexo-setup/required); do
    if [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        finish "FAILED: required package $p is not installed"
    fi
done
for p in $(cat /hexo-setup/optional); do
    echo "hexo-stage2: optional $p: $(dpkg-query -W -f '${Status}' "$p" 2>&1)"
done
set -e
cp -a /hexo-setup/ssh/. /etc/ssh/
mkdir -p -m 700 /root/.ssh
cp /hexo-setup/authorized_keys /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
install -m 755 /hexo-setup/board-init.sh /sbin/hexo-board-init
cp /hexo-setup/hostname /etc/hostname
rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*
rm -rf /hexo-setup /var/cache/apt/archives/*.deb
set +e
python3 -c 'import unicorn, elftools' && finish OK
finish "FAILED: the aarch64 wheels do not import"
