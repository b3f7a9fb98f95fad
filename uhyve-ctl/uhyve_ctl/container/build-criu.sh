#!/bin/bash
# CRIU 4.1.1 and pycriu, built from Debian's source package into $1 (Debian 12's criu 3.17
# cannot dump on recent kernels: its vDSO check fails). Apt state for the source download is
# kept under $1/apt so that the machine's package sources are left as they are.
set -euo pipefail
DEST=$1
VERSION=4.1.1
DEBS="libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libprotobuf-dev libnl-3-dev libnet1-dev libcap-dev
      libbsd-dev libgnutls28-dev libnftables-dev pkg-config python3-protobuf libaio-dev
      libdrm-dev uuid-dev xz-utils"
if ! dpkg -s $DEBS >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends $DEBS
fi
mkdir -p "$DEST/apt/lists/partial" "$DEST/src"
echo "deb-src http://deb.debian.org/debian trixie main" > "$DEST/apt/sources.list"
APT=(-o Dir::Etc::SourceList="$DEST/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$DEST/apt/lists" -o DPkg::Lock::Timeout=600)
cd "$DEST/src"
if [ ! -f "criu_$VERSION.orig.tar.xz" ]; then
  apt-get "${APT[@]}" update -qq
  # Only the upstream tarball is needed; the Debian packaging files may have moved on.
  apt-get "${APT[@]}" source --download-only "criu=$VERSION-1" >/dev/null 2>&1 || true
  test -f "criu_$VERSION.orig.tar.xz" || { echo "criu $VERSION source not found" >&2; exit 1; }
fi
rm -rf "criu-$VERSION"
tar xf "criu_$VERSION.orig.tar.xz"
make -C "criu-$VERSION" -j2 criu >/dev/null
make -C "criu-$VERSION" -j2 lib >/dev/null
install -D "criu-$VERSION/criu/criu" "$DEST/bin/criu"
rm -rf "$DEST/python"
mkdir -p "$DEST/python"
cp -r "criu-$VERSION/lib/pycriu" "$DEST/python/pycriu"
echo "$VERSION" > "$DEST/VERSION"
