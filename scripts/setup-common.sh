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

# debian_apt_dir DIR TYPE [SUITE...]: a private apt configuration in DIR (its own sources list
# and package lists; the system's are not touched) with TYPE lines (deb or deb-src) for the
# Debian archives this system's apt already uses, for SUITEs (default: this release's, with its
# -updates and -security), component main; refreshed. Prints the apt-get options that use it.
debian_apt_dir() {
  local dir=$1 type=$2
  shift 2
  local codename uris suites=("$@") signed="" opts
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  # The archive URIs as configured here (the security archive apart): no host is named here.
  mapfile -t uris < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
    awk -v c="$codename" '$2 ~ ("^" c "(-[a-z]+)?$") {print $1, $2}' | sort -u)
  if [ ${#uris[@]} -eq 0 ]; then
    say "no Debian archive for '$codename' in apt's sources: cannot fetch Debian packages of other releases or sources"
    return 1
  fi
  if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    signed=" [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
  fi
  mkdir -p "$dir/lists/partial"
  : >"$dir/sources.list"
  local line uri release suite
  for line in "${uris[@]}"; do
    read -r uri release <<<"$line"
    if [ ${#suites[@]} -eq 0 ]; then
      echo "$type$signed $uri $release main" >>"$dir/sources.list"
    else
      for suite in "${suites[@]}"; do
        # The main archive serves SUITE and SUITE-updates, the security one SUITE-security.
        case "$release" in
        *-security) [[ $suite == *-security ]] && echo "$type$signed $uri $suite main" >>"$dir/sources.list" ;;
        "$codename") [[ $suite != *-security ]] && echo "$type$signed $uri $suite main" >>"$dir/sources.list" ;;
        esac
      done
    fi
  done
  sort -u -o "$dir/sources.list" "$dir/sources.list"
  opts="-o Dir::Etc::SourceList=$dir/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$dir/lists -o Dir::Cache::archives=$dir/archives -o Debug::NoLocking=1"
  mkdir -p "$dir/archives/partial"
  # shellcheck disable=SC2086 # a list of options
  quietly apt-get $opts update -q || return 1
  echo "$opts"
}

# The environment of a build with the eBPF programs built in (scripts/build-release.sh,
# scripts/build-dist.sh): the eBPF object is required (never a silent fallback to pcap only),
# its toolchain is EBPF_TOOLCHAIN (nightly by default), and bpf-linker is on PATH where
# setup-ebpf-toolchain.sh installs it. PATH changes only when needed: build.rs reruns when it
# changes.
ebpf_build_env() {
  export OLLAMA_TRACER_REQUIRE_EBPF=1
  export OLLAMA_TRACER_EBPF_TOOLCHAIN=${EBPF_TOOLCHAIN:-nightly}
  local dir
  for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" ${BPF_LINKER_ROOT:+"$BPF_LINKER_ROOT/bin"}; do
    case ":$PATH:" in
      *":$dir:"*) ;;
      *) PATH="$dir:$PATH" ;;
    esac
  done
  export PATH
}
