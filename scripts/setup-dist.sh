#!/usr/bin/env bash
# What the static binary of `cargo xtask dist` (scripts/build-dist.sh) needs besides the eBPF
# toolchain: the Rust standard library for the musl target, musl-gcc (ring's C and libpcap are
# compiled for musl), and libpcap as a static musl library, built from Debian's source package
# of the libpcap this system ships (fetched with apt through a private source list; the
# system's apt configuration is not touched; the tarball's checksum is pinned below).
# Idempotent: no output when all is present.
#
# Usage: scripts/setup-dist.sh [TARGET]   (default x86_64-unknown-linux-musl)
# Prints the directory holding libpcap.a (last line of stdout).
#
# Env knobs:
#   USERSPACE_TOOLCHAIN  rustup toolchain that builds the binary (default: stable)
#   OLLAMA_TRACER_DIST_DEPS  where libpcap is built (default: <target dir>/dist-deps, the target
#                        dir being $CARGO_TARGET_DIR or <repo>/target)
#   SKIP_APT=1           do not touch Debian packages
#   VERBOSE=1            say what is already present, too
set -euo pipefail
SETUP_TAG=setup-dist
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${1:-x86_64-unknown-linux-musl}
TC=${USERSPACE_TOOLCHAIN:-stable}
LIBPCAP_VERSION=1.10.3
LIBPCAP_SHA256=2a8885c403516cf7b0933ed4b14d6caa30e02052489ebd414dc75ac52e7559e6
DEPS=${OLLAMA_TRACER_DIST_DEPS:-${CARGO_TARGET_DIR:-$ROOT/target}/dist-deps}
PREFIX=$DEPS/libpcap-$LIBPCAP_VERSION-$TARGET

case "$TARGET" in
x86_64-unknown-linux-musl) ;;
*)
  say "target $TARGET: only x86_64-unknown-linux-musl is set up here (see docs/deploy.md)"
  exit 1
  ;;
esac

# 1. Debian packages: musl-gcc, and flex and bison for libpcap's filter grammar.
if [ "${SKIP_APT:-0}" != 1 ]; then
  apt_ensure "the static binary: musl-gcc (C parts built for musl), flex and bison (libpcap's filter compiler), make" \
    musl-tools flex bison make
fi

# 2. The standard library for the target.
if ! rustup target list --installed --toolchain "$TC" 2>/dev/null | grep -qx "$TARGET"; then
  say "adding the Rust target $TARGET to $TC: the static binary links musl"
  quietly rustup target add "$TARGET" --toolchain "$TC"
else
  verbose "target $TARGET present for $TC"
fi

# 3. libpcap, static, for musl.
if [ -f "$PREFIX/lib/libpcap.a" ] && [ "$(cat "$PREFIX/.sha256" 2>/dev/null)" = "$LIBPCAP_SHA256" ]; then
  verbose "libpcap $LIBPCAP_VERSION for $TARGET present in $PREFIX"
  echo "$PREFIX/lib"
  exit 0
fi
say "building libpcap $LIBPCAP_VERSION as a static musl library: the binary's fallback capture (under a minute)"
work=$(mktemp -d "${TMPDIR:-/tmp}/ollama-tracer-libpcap.XXXXXX")
trap 'rm -rf "$work"' EXIT
opts=$(debian_apt_dir "$work/apt" deb-src)
tarball=libpcap_$LIBPCAP_VERSION.orig.tar.gz
# shellcheck disable=SC2086 # a list of options
(cd "$work" && quietly apt-get $opts source --download-only libpcap)
if [ ! -f "$work/$tarball" ]; then
  say "Debian's source package did not bring $tarball (another libpcap version?): update LIBPCAP_VERSION and LIBPCAP_SHA256"
  exit 1
fi
got=$(sha256sum "$work/$tarball" | cut -d' ' -f1)
if [ "$got" != "$LIBPCAP_SHA256" ]; then
  say "$tarball: sha256 $got, expected $LIBPCAP_SHA256"
  exit 1
fi
tar -xzf "$work/$tarball" -C "$work"
# musl-gcc sees musl's headers only: the kernel's (linux/, asm/) come from the system's.
inc=$work/kernel-headers
mkdir -p "$inc"
ln -s /usr/include/linux /usr/include/asm-generic "$inc/"
ln -s "/usr/include/$(gcc -dumpmachine)/asm" "$inc/asm"
src=$work/libpcap-$LIBPCAP_VERSION
# Only what the capture uses: Linux packet sockets. No D-Bus, USB, Bluetooth, RDMA, netmap,
# remote capture or libnl (monitor mode), so the static library needs nothing else.
(cd "$src" && quietly env CC=musl-gcc CFLAGS="-O2 -fPIE -isystem $inc" ./configure --disable-shared --enable-static \
  --without-libnl --disable-usb --disable-netmap --disable-bluetooth --disable-dbus --disable-rdma --disable-remote \
  --without-dpdk --without-dag --without-septel --without-snf --without-turbocap &&
  quietly make -j"$(nproc)" libpcap.a)
mkdir -p "$PREFIX/lib"
cp "$src/libpcap.a" "$PREFIX/lib/"
echo "$LIBPCAP_SHA256" >"$PREFIX/.sha256"
echo "$PREFIX/lib"
