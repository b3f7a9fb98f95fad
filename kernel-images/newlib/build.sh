#!/usr/bin/env bash
# Build newlib (Debian's newlib-source) for one bare-metal ISA with clang/lld,
# configured so the x86_64 and aarch64 builds contain the same symbols and the
# same C code paths (see README.md next to this script).
#
# usage: build.sh x86_64|aarch64 PREFIX
# result: PREFIX/lib/{libc.a,libm.a,libg.a,libgcc.a}, PREFIX/include/...
#
# Environment overrides (defaults in brackets):
#   NEWLIB_TARBALL  newlib source tarball [/usr/src/newlib/newlib-*.tar.*]
#   LIBGCC          libgcc.a to install   [aarch64: libgcc-12-dev-arm64-cross,
#                                          x86_64: gcc -print-libgcc-file-name]
#   CLANG, LLVM_SUFFIX  compiler / suffix of the llvm-* tools [clang, ""]
#   JOBS            parallel make jobs    [nproc]
#   KEEP_BUILD=1    keep the scratch build directory
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
step="start"
die() { echo "build.sh: ERROR: $*" >&2; exit 1; }
trap 'rc=$?; [ $rc -eq 0 ] || echo "build.sh: FAILED during: $step (exit $rc)" >&2' EXIT

[ $# -eq 2 ] || die "usage: $0 x86_64|aarch64 PREFIX"
isa="$1"
prefix="$2"
case "$isa" in
  x86_64)
    conf_target=x86_64-elf           # matches x86_64-*-elf* in our configure.host patch
    clang_target=x86_64-unknown-none-elf
    # no red zone: interrupts/exceptions may run on the same stack
    isa_flags="-mno-red-zone"
    ;;
  aarch64)
    conf_target=aarch64-none-elf
    clang_target=aarch64-none-elf
    isa_flags=""
    ;;
  *) die "ISA must be x86_64 or aarch64, got '$isa'" ;;
esac

mkdir -p "$prefix" || die "cannot create PREFIX $prefix"
prefix="$(cd "$prefix" && pwd)"

# ---- tools -------------------------------------------------------------------
step="checking tools"
CLANG="${CLANG:-clang}"
sfx="${LLVM_SUFFIX:-}"
for t in "$CLANG" "llvm-ar$sfx" "llvm-ranlib$sfx" "llvm-nm$sfx" "llvm-objdump$sfx" \
         "llvm-objcopy$sfx" "llvm-strip$sfx" "llvm-readelf$sfx" "ld.lld$sfx" make patch tar; do
  command -v "$t" >/dev/null || die "tool '$t' not found (apt install clang lld llvm make patch)"
done

if [ -z "${NEWLIB_TARBALL:-}" ]; then
  NEWLIB_TARBALL="$(ls /usr/src/newlib/newlib-*.tar.* 2>/dev/null | head -n1 || true)"
fi
[ -n "$NEWLIB_TARBALL" ] && [ -f "$NEWLIB_TARBALL" ] \
  || die "newlib source tarball not found (apt install newlib-source, or set NEWLIB_TARBALL)"

if [ -z "${LIBGCC:-}" ]; then
  if [ "$isa" = aarch64 ]; then
    # newest libgcc-N-dev-arm64-cross: provides the 128-bit long double helpers
    LIBGCC="$(ls -d /usr/lib/gcc-cross/aarch64-linux-gnu/*/libgcc.a 2>/dev/null | sort -V | tail -n1 || true)"
  else
    LIBGCC="$(gcc -print-libgcc-file-name 2>/dev/null || true)"
  fi
fi
[ -n "$LIBGCC" ] && [ -f "$LIBGCC" ] \
  || die "libgcc.a for $isa not found (apt install libgcc-12-dev-arm64-cross / gcc, or set LIBGCC)"

# Refuse to clobber a PREFIX that this script did not create.
step="checking PREFIX"
stamp="$prefix/.hexo-newlib"
if [ -e "$prefix/include" ] && [ ! -e "$stamp" ]; then
  die "$prefix/include exists but was not made by this script; use an empty PREFIX"
fi

# ---- unpack + patch --------------------------------------------------------------
step="unpacking $NEWLIB_TARBALL"
work="$(mktemp -d "${TMPDIR:-/tmp}/hexo-newlib-$isa.XXXXXX")"
if [ "${KEEP_BUILD:-0}" = 1 ]; then
  echo "build.sh: scratch directory kept: $work"
else
  trap 'rc=$?; rm -rf "$work"; [ $rc -eq 0 ] || echo "build.sh: FAILED during: $step (exit $rc)" >&2' EXIT
fi
mkdir "$work/src"
tar -xf "$NEWLIB_TARBALL" -C "$work/src" --strip-components=1
[ -x "$work/src/configure" ] && [ -d "$work/src/newlib" ] || die "unexpected tarball layout"

for p in "$here"/patches/*.patch; do
  [ -e "$p" ] || continue
  step="applying patch $(basename "$p")"
  patch -d "$work/src" -p1 --forward --batch --quiet < "$p"
done

# ---- configure -------------------------------------------------------------------
# Same flags on both ISAs so the C preprocessor picks the same code paths:
#  math flags: new exp/log/pow (aarch64 default) without fma/round intrinsics
#    (x86_64 default); MALLOC_ALIGNMENT=16 (aarch64 sys/config.h default; x86_64
#    would otherwise use 8-byte bins => different malloc code and heap layout);
#  -fsigned-char: char is unsigned on aarch64 by default;
#  -ffp-contract=off: clang would fuse a*b+c on aarch64 only;
#  per-function/data sections + no unwind tables: for the layout tool;
#  -ffile-prefix-map: no scratch paths in __FILE__ strings (reproducible).
cflags="-O2 -fno-pic -ffunction-sections -fdata-sections -ffp-contract=off \
 -fsigned-char -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-stack-protector \
 -nostdlibinc -D__ELF__ -D__OBSOLETE_MATH_DEFAULT=0 -DHAVE_FAST_FMA=0 \
 -DHAVE_FAST_ROUND=0 -DHAVE_FAST_LROUND=0 -DMALLOC_ALIGNMENT=16 \
 -ffile-prefix-map=$work/src=newlib -ffile-prefix-map=$work/build=newlib-build $isa_flags"

step="configure ($conf_target)"
mkdir "$work/build" "$work/stage"
log="$work/build.log"
echo "build.sh: building newlib for $isa in $work (log: $log)"
start=$SECONDS
(
  cd "$work/build"
  "$work/src/configure" \
    --target="$conf_target" --prefix="$work/stage" \
    --disable-multilib \
    --disable-newlib-supplied-syscalls \
    --enable-newlib-io-long-long \
    --enable-newlib-io-c99-formats \
    --enable-newlib-io-long-double \
    --disable-newlib-multithread \
    --enable-newlib-global-atexit \
    --disable-nls \
    CC_FOR_TARGET="$CLANG --target=$clang_target" \
    CXX_FOR_TARGET="$CLANG++ --target=$clang_target" \
    AS_FOR_TARGET="$CLANG --target=$clang_target" \
    AR_FOR_TARGET="llvm-ar$sfx" RANLIB_FOR_TARGET="llvm-ranlib$sfx" \
    NM_FOR_TARGET="llvm-nm$sfx" OBJDUMP_FOR_TARGET="llvm-objdump$sfx" \
    OBJCOPY_FOR_TARGET="llvm-objcopy$sfx" STRIP_FOR_TARGET="llvm-strip$sfx" \
    READELF_FOR_TARGET="llvm-readelf$sfx" LD_FOR_TARGET="ld.lld$sfx" \
    CFLAGS_FOR_TARGET="$cflags"
) >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "configure failed (log above)"; }

step="make all-target-newlib"
make -C "$work/build" -j"${JOBS:-$(nproc)}" all-target-newlib >>"$log" 2>&1 \
  || { grep -n -m 20 -E 'error|Error' "$log" >&2 || true; tail -n 30 "$log" >&2; die "build failed"; }
step="make install-target-newlib"
make -C "$work/build" install-target-newlib >>"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; die "install failed"; }

# ---- flatten into PREFIX -------------------------------------------------------
# newlib installs under STAGE/<target>/{lib,include}; we want PREFIX/{lib,include}.
step="installing into $prefix"
sysroot="$work/stage/$conf_target"
[ -f "$sysroot/lib/libc.a" ] && [ -f "$sysroot/lib/libm.a" ] && [ -d "$sysroot/include" ] \
  || die "expected $conf_target/lib/libc.a, libm.a and include/ in the staging dir"
# --disable-newlib-multithread only puts -D__SINGLE_THREAD__ into newlib's own
# CFLAGS; publish it in newlib.h too, so programs see the library's FILE layout
# (_mbstate/_flags2 offsets) and the same getc/putc macros.
nh="$sysroot/include/newlib.h"
guard='#endif /* !__NEWLIB_H__ */'
grep -qxF "$guard" "$nh" || die "unexpected $nh (no closing include guard)"
grep -q 'define __SINGLE_THREAD__' "$nh" || sed -i "s|^#endif /\* !__NEWLIB_H__ \*/\$|\
/* hexo: libc is built with --disable-newlib-multithread */\n\
#ifndef __SINGLE_THREAD__\n#define __SINGLE_THREAD__ 1\n#endif\n\n&|" "$nh"
grep -q 'define __SINGLE_THREAD__' "$nh" || die "could not add __SINGLE_THREAD__ to newlib.h"

rm -rf "$prefix/include" "$prefix/lib"
mkdir -p "$prefix/lib"
cp -a "$sysroot/include" "$prefix/include"
cp -a "$sysroot/lib/." "$prefix/lib/"
# Both ISAs link -lgcc the same way (aarch64 needs it for long double helpers).
cp "$LIBGCC" "$prefix/lib/libgcc.a"
printf 'newlib %s for %s, built by kernel-images/newlib/build.sh\n' \
  "$(basename "$NEWLIB_TARBALL")" "$isa" > "$stamp"

echo "build.sh: OK: $isa newlib in $prefix ($((SECONDS - start)) s)"
