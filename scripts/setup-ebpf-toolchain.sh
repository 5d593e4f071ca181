#!/usr/bin/env bash
# Installs what building and running the tracer needs (Debian 12 + rustup): libpcap for the
# fallback capture, the nightly toolchain with rust-src and bpf-linker for the kernel programs,
# tracefs. Nothing the tests alone use (scripts/setup-test-tools.sh has those): this is all
# `cargo xtask run` installs.
# Idempotent: quiet and fast (a few checks, no network) when everything is present; each step
# that installs something says what and why, once, and shows the tools' output only on failure.
# Called by `cargo xtask`; run as root (apt-get, mount).
#
# Env knobs:
#   EBPF_TOOLCHAIN   rustup toolchain for the BPF crate (default: nightly)
#   USERSPACE_TOOLCHAIN  rustup toolchain that builds bpf-linker (default: stable; the
#                    container build sets the one its image ships, e.g. 1.95.0)
#   BPF_LINKER_ROOT  install prefix for bpf-linker (default: cargo's, i.e. $CARGO_HOME)
#   SKIP_APT=1       do not touch Debian packages
#   VERBOSE=1        say what is already present, too
set -euo pipefail
SETUP_TAG=setup-ebpf
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

TC=${EBPF_TOOLCHAIN:-nightly}
BPF_LINKER_VERSION=0.13.0

# 1. Debian packages: libpcap-dev (the pcap crate links libpcap: the fallback capture) and
#    pkg-config (which finds it).
if [ "${SKIP_APT:-0}" != 1 ]; then
  apt_ensure "libpcap for the fallback capture (libpcap-dev, pkg-config)" libpcap-dev pkg-config
fi

# 2. The BPF toolchain and its rust-src (-Z build-std=core; the BPF target has no prebuilt core).
#    RUSTUP_AUTO_INSTALL=0 may be set: install explicitly.
if ! rustup run "$TC" rustc --version >/dev/null 2>&1; then
  say "installing the rust toolchain $TC: it builds the kernel programs"
  quietly rustup toolchain install "$TC" --profile minimal
fi
SYSROOT=$(rustc +"$TC" --print sysroot)
if [ ! -d "$SYSROOT/lib/rustlib/src/rust/library/core" ]; then
  say "installing rust-src for $TC: the BPF target has no prebuilt core library"
  quietly rustup component add rust-src --toolchain "$TC"
else
  verbose "rust-src present for $TC"
fi

# 3. bpf-linker, linked against the toolchain's OWN libLLVM (exact LLVM match, no LLVM package).
#    The toolchain ships lib/libLLVM-<major>-rust-<version>.so; derive both from `rustc -vV`.
NL="$SYSROOT/lib"
LLVM_MAJOR=$(rustc +"$TC" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
RUST_RELEASE=$(rustc +"$TC" -vV | sed -n 's/^release: //p')
LIBNAME="LLVM-$LLVM_MAJOR-rust-$RUST_RELEASE"
if [ ! -e "$NL/lib$LIBNAME.so" ]; then
  # Fall back to whatever the sysroot ships for this LLVM major.
  found=$(cd "$NL" && ls libLLVM-"$LLVM_MAJOR"-rust-*.so 2>/dev/null | head -1 || true)
  if [ -z "$found" ]; then
    say "no libLLVM-$LLVM_MAJOR-rust-*.so in $NL: cannot build bpf-linker against the toolchain's LLVM"
    exit 1
  fi
  LIBNAME=${found#lib}
  LIBNAME=${LIBNAME%.so}
fi
linker_ok() {
  local bl
  bl=$(command -v bpf-linker 2>/dev/null) || bl=""
  if [ -z "$bl" ] && [ -x "${BPF_LINKER_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/bpf-linker" ]; then
    bl="${BPF_LINKER_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/bpf-linker"
  fi
  [ -n "$bl" ] || return 1
  "$bl" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION" || return 1
  # Must resolve the toolchain's own libLLVM (reinstall when the nightly changes).
  ldd "$bl" 2>/dev/null | grep -q "$NL/lib" || return 1
  ! ldd "$bl" 2>/dev/null | grep -q 'not found'
}
if ! linker_ok; then
  say "building bpf-linker $BPF_LINKER_VERSION against $LIBNAME, which links the kernel programs (about a minute)"
  quietly env RUSTFLAGS="-L $NL -l dylib=$LIBNAME -C link-arg=-Wl,-rpath,$NL" \
    cargo +"${USERSPACE_TOOLCHAIN:-stable}" install "bpf-linker@$BPF_LINKER_VERSION" --locked --force --quiet \
    --no-default-features --features "llvm-$LLVM_MAJOR,no-llvm-linking" \
    ${BPF_LINKER_ROOT:+--root "$BPF_LINKER_ROOT"}
else
  verbose "bpf-linker $BPF_LINKER_VERSION present (LLVM $LLVM_MAJOR)"
fi

# 4. tracefs (tracepoints); not mounted on every machine. Best effort.
if [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
  as_root mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null \
    && say "mounted tracefs on /sys/kernel/tracing: attribution's connect/listen tracepoint needs it" \
    || say "could not mount tracefs on /sys/kernel/tracing (only attribution's tracepoint needs it)"
fi
verbose "done"
