#!/usr/bin/env bash
# Debian packages the tests use and running the tracer does not (scripts/setup-ebpf-toolchain.sh
# has those). Part of `cargo xtask test`'s set-up (scripts/setup.sh), never of `cargo xtask run`.
# Idempotent: no output when all are installed. Run as root.
#
#   tshark      the benchmark smoke run compares the replay with tshark's HTTP reassembly
#   bpftool     the live tests check that no program or link of the tracer stays behind
#   iproute2    `ip netns`, veth and `tc`: the live tests' network namespaces and qdiscs
#   tmux        `top` driven end to end (send-keys, capture-pane)
#   strace      the deployment smoke run checks the systemd unit's syscall filter
#   systemd     systemd-analyze verifies the unit and scores its sandboxing
#   procps      ps and kill around the processes the tests start
#   util-linux  setpriv, unshare, chrt: the deployed privileges, real-time client drivers
set -euo pipefail
SETUP_TAG=setup-test-tools
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
  missing=$(apt_missing tshark bpftool iproute2 tmux strace systemd procps util-linux | tr '\n' ' ')
  if [ -n "$missing" ]; then say "not root: cannot install $missing(the tests that need them will fail or say SKIPPED)"; fi
  exit 0
fi
# tshark asks whether non-root users may capture; the default (no) is what the tests need.
apt_ensure "the tests' tools: tshark (benchmark comparison), bpftool (nothing left attached), iproute2 (namespaces), tmux (top), strace and systemd (unit checks), procps, util-linux" \
  tshark bpftool iproute2 tmux strace systemd procps util-linux
