#!/usr/bin/env bash
# Runs a command where none of the tools the test set-up installs is present — as on a fresh CI
# machine — without uninstalling anything here: in a mount namespace whose root is an overlay of
# this machine's (every change lands in a scratch file system, thrown away at the end), where
#   - the Debian packages that scripts/setup-test-tools.sh, setup-prometheus.sh and
#     setup-dist.sh install (and kernel-matrix.sh's) are purged, with what they pulled in;
#   - cargo-deny and cargo-fuzz are gone from cargo's bin directory, the musl target from
#     rustup (setup-audit.sh, setup-fuzz.sh, setup-dist.sh);
#   - the repository is a fresh clone of HEAD: no Python venvs, no node_modules, no target
#     directory (unless --target-dir), and the static libpcap is built anew;
# it first checks that those tools are really absent, then runs COMMAND in the clone.
#
# Usage: scripts/without-test-tools.sh [--target-dir DIR] [COMMAND...]
#   COMMAND           default: bash .ci/run (the test command, as CI runs it)
#   --target-dir DIR  cargo's target directory, shared with this machine (compiled crates are
#                     not tools); default: a fresh one in the scratch file system
# Env: SCRATCH_SIZE (default 80G, a sparse file under /var/tmp). Run as root.
set -euo pipefail
SETUP_TAG=without-test-tools
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

TARGET_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
  --target-dir) TARGET_DIR=$(realpath "$2"); shift 2 ;;
  *) break ;;
  esac
done
[ $# -gt 0 ] || set -- bash .ci/run
[ "$(id -u)" = 0 ] || { say "run as root (mount namespace, overlay, apt in the overlay)"; exit 1; }

# What the test set-up installs, absent in the overlay.
PACKAGES=(tshark wireshark-common bpftool tmux prometheus musl-tools flex bison busybox-static qemu-system-x86)
CARGO_TOOLS=(cargo-deny cargo-fuzz)
ABSENT=(tshark dumpcap bpftool tmux prometheus promtool musl-gcc flex bison cargo-deny cargo-fuzz)

S=$(mktemp -d /var/tmp/ot-without-test-tools.XXXXXX)
cleanup() {
  umount -l "$S/fs" 2>/dev/null || true
  rm -rf "$S"
}
trap cleanup EXIT
truncate -s "${SCRATCH_SIZE:-80G}" "$S/scratch.img"
mkfs.ext4 -q -F "$S/scratch.img"
mkdir -p "$S/fs" "$S/root"
COMMIT=$(git -C "$ROOT" rev-parse HEAD)
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin

# Inside the overlay, as root of it.
inner=$(
  cat <<EOF
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
installed=\$(for p in ${PACKAGES[*]}; do dpkg-query -W -f='\${Status}' "\$p" 2>/dev/null | grep -q 'install ok installed' && echo "\$p"; done || true)
if [ -n "\$installed" ]; then
  apt-get purge -y -q \$installed >/dev/null 2>&1
  apt-get autoremove --purge -y -q >/dev/null 2>&1
fi
for t in ${CARGO_TOOLS[*]}; do rm -f "$CARGO_BIN/\$t"; done
# rustup renames directories to remove them, which an overlay refuses (EXDEV): the target's
# files and its entry in the toolchain's component list go by hand then.
if ! rustup target remove x86_64-unknown-linux-musl --toolchain stable >/dev/null 2>&1; then
  rustlib=\$(rustc +stable --print sysroot)/lib/rustlib
  rm -rf "\$rustlib/x86_64-unknown-linux-musl" "\$rustlib/manifest-rust-std-x86_64-unknown-linux-musl"
  sed -i '/^rust-std-x86_64-unknown-linux-musl\$/d' "\$rustlib/components"
  python3 - "\$rustlib/multirust-config.toml" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r'\[\[components\]\]\npkg = "rust-std"\ntarget = "x86_64-unknown-linux-musl"\n[^\[]*', "", s)
open(p, "w").write(s)
PY
fi
present=""
rustup target list --installed --toolchain stable | grep -qx x86_64-unknown-linux-musl && present=" the musl target"
for t in ${ABSENT[*]}; do command -v "\$t" >/dev/null 2>&1 && present="\$present \$t"; done
if [ -n "\$present" ]; then echo "[without-test-tools] still present:\$present" >&2; exit 1; fi
echo "[without-test-tools] absent: ${ABSENT[*]}; the musl target; venvs, node_modules (fresh clone of $COMMIT)" >&2
mkdir -p /var/tmp/ci
git clone -q --no-checkout --no-hardlinks "$ROOT" /var/tmp/ci/ollama-tracer
cd /var/tmp/ci/ollama-tracer
git checkout -q "$COMMIT"
export CI=true OLLAMA_TRACER_DIST_DEPS=/var/tmp/ci/dist-deps
${TARGET_DIR:+export CARGO_TARGET_DIR=$TARGET_DIR}
start=\$(date +%s)
rc=0
$(printf '%q ' "$@") || rc=\$?
echo "[without-test-tools] exit \$rc after \$((\$(date +%s) - start)) s" >&2
for t in ${ABSENT[*]}; do command -v "\$t" >/dev/null 2>&1 && echo "[without-test-tools] now installed: \$t" >&2; done
exit \$rc
EOF
)

# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private -- bash -c '
  set -euo pipefail
  S=$1 TARGET_DIR=$2 inner=$3
  mount -o loop "$S/scratch.img" "$S/fs"
  mkdir -p "$S/fs/upper" "$S/fs/work"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$S/fs/upper,workdir=$S/fs/work" "$S/root"
  for m in proc sys dev run; do mount --rbind "/$m" "$S/root/$m"; done
  if [ -n "$TARGET_DIR" ]; then mount --bind "$TARGET_DIR" "$S/root$TARGET_DIR"; fi
  exec chroot "$S/root" /bin/bash -c "$inner"
' bash "$S" "$TARGET_DIR" "$inner"
