# Sourced by the set-up scripts (not run on its own). Each step says once what it installs and
# why, keeps the tools' own output (apt, debconf, cargo install, pip) in a log that is shown only
# when the step fails, and says nothing when there is nothing to do.
#
# Before sourcing, set SETUP_TAG (the prefix of its lines). VERBOSE=1 also reports what is
# already present.

say() { echo "[${SETUP_TAG:-setup}] $*" >&2; }
verbose() { if [ "${VERBOSE:-0}" = 1 ]; then say "$@"; fi; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"
    return 1
  fi
}

# quietly CMD...: runs CMD with its output kept aside; on failure shows that output and fails.
quietly() {
  local log rc=0
  log=$(mktemp "${TMPDIR:-/tmp}/ollama-tracer-setup.XXXXXX")
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    say "FAILED (exit $rc): $*"
    sed 's/^/    /' "$log" >&2
  fi
  rm -f "$log"
  return "$rc"
}

# apt_missing PKG...: the packages (of those named) that are not installed, one per line.
apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

# apt_ensure WHY PKG...: installs the missing ones, saying which and why.
apt_ensure() {
  local why=$1
  shift
  local missing
  mapfile -t missing < <(apt_missing "$@")
  if [ ${#missing[@]} -eq 0 ]; then
    verbose "present: $*"
    return 0
  fi
  say "installing ${missing[*]} (Debian): $why"
  # The package lists are refreshed when older than a day (or when an install fails on them).
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    quietly as_root apt-get update -q
  fi
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >/dev/null 2>&1; then
    quietly as_root apt-get update -q
    quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

