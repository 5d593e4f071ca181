#!/usr/bin/env bash
# Checks the deployment files (deploy/, docs/deploy.md): part of `cargo xtask test`, runnable
# alone. Takes well under a minute once the tools are installed.
#
#   hadolint           deploy/Dockerfile (and its toolchain pins against the tested build)
#   helm               the chart linted (--strict) and rendered (Helm v4's Go SDK, see
#                      scripts/helm-render.py) with the default values and every
#                      deploy/helm/ollama-tracer/ci/*-values.yaml; values that must be refused are
#   grafana dashboard  deploy/grafana/ollama-tracer.json parses, the chart's copy equals it
#                      (--update rewrites the copy), the ConfigMap rendered with ci/otlp holds it
#   plain manifests    deploy/kubernetes/ollama-tracer.yaml equals the chart rendered with
#                      deploy/kubernetes/values.yaml (--update rewrites it)
#   kubernetes-validate  every rendered manifest and the plain manifests, --strict, against
#                      the oldest (1.30, the chart's kubeVersion) and newest (1.37) schemas
#   checkov            the rendered manifests, the plain manifests and the Dockerfile; each
#                      skipped check is listed below with its reason
#   systemd-analyze    verify the unit (any message fails), security exposure score
#   --binary BIN       the image's static binary (scripts/build-dist.sh): --version, `check`, then
#                      run with the DaemonSet's and the unit's privileges (scripts/deploy-smoke.py)
#
# Usage: scripts/validate-deploy.sh [--binary BIN] [--update]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=""
UPDATE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --update) UPDATE=1; shift ;;
    *) echo "usage: $0 [--binary BIN] [--update]" >&2; exit 2 ;;
  esac
done

bash "$ROOT/scripts/setup-deploy-tools.sh"
VENV=${OLLAMA_TRACER_DEPLOY_VENV:-$ROOT/tests/.venv-deploy}
PY=$VENV/bin/python
CHART=deploy/helm/ollama-tracer
PLAIN=deploy/kubernetes/ollama-tracer.yaml
KUBE_VERSIONS=(1.30.0 1.37.0)
WORK=$(mktemp -d /tmp/ollama-tracer-deploy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# checkov: no calls home (this machine has no internet; results must not depend on it).
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

passed=0
failed=0
# check NAME CMD...: runs CMD, output shown only on failure.
check() {
  local name=$1
  shift
  if "$@" >"$WORK/log" 2>&1; then
    passed=$((passed + 1))
    echo "[deploy] ok    $name"
    if [ -s "$WORK/log" ] && [ "${VERBOSE:-0}" = 1 ]; then sed 's/^/    /' "$WORK/log"; fi
  else
    failed=$((failed + 1))
    echo "[deploy] FAIL  $name"
    sed 's/^/    /' "$WORK/log"
  fi
}

# --- Dockerfile ---------------------------------------------------------------------------------
check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" deploy/Dockerfile

# The image must build with the toolchains the tests ran with: its pins are those toolchains.
dockerfile_pins() {
  local rust ebpf stable nightly_date
  rust=$(sed -n 's/^ARG RUST_VERSION=//p' deploy/Dockerfile)
  ebpf=$(sed -n 's/^ARG EBPF_TOOLCHAIN=//p' deploy/Dockerfile)
  stable=$(rustc +"${USERSPACE_TOOLCHAIN:-stable}" --version | awk '{print $2}')
  nightly_date=$(sed -n 's/^date = "\(.*\)"/\1/p' \
    "$(rustc +"${EBPF_TOOLCHAIN:-nightly}" --print sysroot)/lib/rustlib/multirust-channel-manifest.toml")
  echo "Dockerfile: RUST_VERSION=$rust EBPF_TOOLCHAIN=$ebpf; tested with rustc $stable and nightly-$nightly_date"
  [ "$rust" = "$stable" ] && [ "$ebpf" = "nightly-$nightly_date" ]
}
if command -v rustc >/dev/null; then
  check "Dockerfile toolchain pins = the tested toolchains" dockerfile_pins
fi

# --- Helm chart ---------------------------------------------------------------------------------
render() { # render NAME [values files...]
  local name=$1
  shift
  local args=()
  for f in "$@"; do args+=(-f "$f"); done
  "$PY" scripts/helm-render.py "$CHART" --lint --kube-version "v${KUBE_VERSIONS[-1]}" "${args[@]}" -o "$WORK/$name.yaml"
}
check "helm lint + render: default values" render default
RENDERS=(default)
for v in "$CHART"/ci/*-values.yaml; do
  n=$(basename "$v" -values.yaml)
  check "helm lint + render: ci/$n-values.yaml" render "$n" "$v"
  RENDERS+=("$n")
done

# Values the chart must refuse (schema, or a capture mode that cannot work in a pod).
must_refuse() { # must_refuse YAML
  printf '%s\n' "$1" >"$WORK/bad-values.yaml"
  if "$PY" scripts/helm-render.py "$CHART" -f "$WORK/bad-values.yaml" -o /dev/null 2>"$WORK/refusal"; then
    echo "rendered, but should have been refused: $1"
    return 1
  fi
  cat "$WORK/refusal"
}
check "helm refuses capture.mode typo" must_refuse 'capture: {mode: ebpff}'
check "helm refuses pcap without hostNetwork" must_refuse 'capture: {mode: pcap}'
check "helm refuses an unknown value" must_refuse 'hostPid: true'
check "helm refuses a sampling ratio > 1" must_refuse 'sampling: {ratio: 2}'

# --- Grafana dashboard --------------------------------------------------------------------------
# The chart can only read files inside itself: it ships a copy of deploy/grafana's dashboard
# (--update refreshes it). Its queries are checked against a real scrape by
# tests/tests/export/prometheus.rs (cargo test).
DASH=deploy/grafana/ollama-tracer.json
DASH_COPY=$CHART/dashboards/ollama-tracer.json
dashboard() {
  "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["panels"] and d["uid"], "no panels"' "$DASH"
  if [ "$UPDATE" = 1 ]; then cp "$DASH" "$DASH_COPY"; fi
  cmp "$DASH" "$DASH_COPY" || {
    echo "$DASH_COPY differs from $DASH: run scripts/validate-deploy.sh --update"
    return 1
  }
}
check "grafana dashboard: JSON, and the chart's copy = $DASH" dashboard
dashboard_rendered() { # the ConfigMap of ci/otlp carries the dashboard, byte for byte
  "$PY" - "$WORK/otlp.yaml" "$DASH" <<'PYEOF'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
assert len(cms) == 1, f"{len(cms)} dashboard ConfigMaps"
cm = cms[0]
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", cm["metadata"]["labels"]
assert json.loads(cm["data"]["ollama-tracer.json"]) == json.load(open(sys.argv[2]))
print(cm["metadata"]["namespace"], "/", cm["metadata"]["name"])
PYEOF
}
[ -f "$WORK/otlp.yaml" ] && check "grafana dashboard ConfigMap (ci/otlp values)" dashboard_rendered

# --- Prometheus rules ---------------------------------------------------------------------------
# The chart ships a copy of deploy/prometheus's rules (--update refreshes it); promtool checks and
# unit-tests them in tests/tests/export/prometheus.rs (cargo test).
RULES=deploy/prometheus/ollama-tracer.rules.yml
RULES_COPY=$CHART/rules/ollama-tracer.rules.yml
rules_copy() {
  if [ "$UPDATE" = 1 ]; then cp "$RULES" "$RULES_COPY"; fi
  cmp "$RULES" "$RULES_COPY" || {
    echo "$RULES_COPY differs from $RULES: run scripts/validate-deploy.sh --update"
    return 1
  }
}
check "prometheus rules: the chart's copy = $RULES" rules_copy
rules_rendered() { # the PrometheusRule of ci/otlp carries the rules' groups
  "$PY" - "$WORK/otlp.yaml" "$RULES" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"{len(rules)} PrometheusRules"
assert rules[0]["spec"] == yaml.safe_load(open(sys.argv[2])), "the rendered rules differ"
print(rules[0]["metadata"]["namespace"], "/", rules[0]["metadata"]["name"])
PYEOF
}
[ -f "$WORK/otlp.yaml" ] && check "PrometheusRule (ci/otlp values)" rules_rendered

# --- Plain manifests (rendered from the chart, committed) ---------------------------------------
plain() {
  "$PY" scripts/helm-render.py "$CHART" -f deploy/kubernetes/values.yaml -o "$WORK/plain.body"
  {
    cat <<'EOF'
# ollama-tracer: plain Kubernetes manifests (Namespace, ServiceAccount, ClusterRole/Binding,
# ConfigMap, DaemonSet, metrics Service, NetworkPolicy): `kubectl apply -f` this file.
# The OTLP endpoint is in ConfigMap ollama-tracer; docs/deploy.md explains every privilege.
#
# GENERATED from the Helm chart deploy/helm/ollama-tracer with deploy/kubernetes/values.yaml
# by `scripts/validate-deploy.sh --update`; the test command fails when they differ. Edit the
# chart or the values, not this file.
EOF
    sed 's/app.kubernetes.io\/managed-by: Helm/app.kubernetes.io\/managed-by: kubectl/' "$WORK/plain.body"
  } >"$WORK/plain.yaml"
  if [ "$UPDATE" = 1 ]; then cp "$WORK/plain.yaml" "$PLAIN"; fi
  diff -u "$PLAIN" "$WORK/plain.yaml" || {
    echo "$PLAIN is out of date: run scripts/validate-deploy.sh --update"
    return 1
  }
}
check "plain manifests = chart + deploy/kubernetes/values.yaml" plain

# --- kubernetes-validate ------------------------------------------------------------------------
kvalidate() { # kvalidate VERSION FILE
  "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$1" "$2" >"$WORK/kv" 2>&1 || {
    cat "$WORK/kv"
    return 1
  }
  cat "$WORK/kv"
  # A kind without a schema is only a warning to the tool: allowed for the ServiceMonitor and
  # PrometheusRule CRDs (prometheus-operator's schemas are not packaged), an error for
  # anything else.
  ! grep -Ev "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" "$WORK/kv" |
    grep -E '^(WARN|ERROR)'
}
for k in "${KUBE_VERSIONS[@]}"; do
  for r in "${RENDERS[@]}"; do
    [ -f "$WORK/$r.yaml" ] && check "kubernetes-validate --strict $k: chart, $r values" kvalidate "$k" "$WORK/$r.yaml"
  done
  check "kubernetes-validate --strict $k: $PLAIN" kvalidate "$k" "$PLAIN"
done

# --- checkov ------------------------------------------------------------------------------------
# Checks skipped for every rendering, because the capture needs them:
#   CKV_K8S_23, CKV_K8S_40  root / low uid: a non-root uid gets no capabilities in Kubernetes
#                           (no ambient capabilities); every capability but the capture's is
#                           dropped instead, with no_new_privs and a read-only root.
#   CKV_K8S_25              added capabilities: BPF, PERFMON, NET_ADMIN (+ NET_RAW for
#                           libpcap) are exactly what loading and attaching the programs needs.
#   CKV_K8S_17              hostPID: naming the process and pod behind each socket (/proc of
#                           the node); values hostPID=false turns it off (ci/minimal passes).
#   CKV_K8S_38              service account token: attribution reads pods from the API server
#                           (read-only RBAC); serviceAccount.automountToken=false turns it off.
#   CKV_K8S_15, CKV_K8S_43  pull policy / digest: the default references a version tag;
#                           production sets image.digest (ci/otlp does, and passes both).
BASE_SKIPS=CKV_K8S_23,CKV_K8S_40,CKV_K8S_25,CKV_K8S_17,CKV_K8S_38,CKV_K8S_15,CKV_K8S_43
# Per rendering, only what its values deliberately ask for:
#   CKV_K8S_19              hostNetwork: the libpcap fallback (pcap, minimal) needs it.
#   CKV2_K8S_6              no NetworkPolicy: policies do not apply to hostNetwork pods.
#   CKV_K8S_8, CKV_K8S_9    probes: they use the metrics endpoint, disabled in ci/pcap.
#   CKV_K8S_31              seccomp Unconfined: ci/minimal, for runtimes whose default profile
#                           refuses bpf() without CAP_SYS_ADMIN.
#   CKV_K8S_35              secret as env: OTEL_EXPORTER_OTLP_HEADERS is an environment
#                           variable by the OpenTelemetry spec (ci/otlp).
declare -A SKIPS=(
  [default]=$BASE_SKIPS
  [otlp]=CKV_K8S_23,CKV_K8S_40,CKV_K8S_25,CKV_K8S_17,CKV_K8S_38,CKV_K8S_35
  [pcap]=$BASE_SKIPS,CKV_K8S_19,CKV2_K8S_6,CKV_K8S_8,CKV_K8S_9
  [minimal]=CKV_K8S_23,CKV_K8S_40,CKV_K8S_25,CKV_K8S_15,CKV_K8S_43,CKV_K8S_19,CKV2_K8S_6,CKV_K8S_31
)
checkov_k8s() { # checkov_k8s FILE SKIPS
  "$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes -f "$1" --skip-check "$2"
}
for r in "${RENDERS[@]}"; do
  [ -f "$WORK/$r.yaml" ] || continue
  if [ -z "${SKIPS[$r]:-}" ]; then
    check "checkov: chart, $r values (no skip list for it in this script)" false
    continue
  fi
  check "checkov kubernetes: chart, $r values" checkov_k8s "$WORK/$r.yaml" "${SKIPS[$r]}"
done
check "checkov kubernetes: $PLAIN" checkov_k8s "$PLAIN" "$BASE_SKIPS"
# The Dockerfile's two skips are inline (# checkov:skip=...) with their reasons.
check "checkov dockerfile: deploy/Dockerfile" \
  "$VENV/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f deploy/Dockerfile

# --- systemd ------------------------------------------------------------------------------------
# `verify` needs the unit's ExecStart and the targets it depends on: an alternate root holding
# them (the binary, or a stand-in when none was given) and this machine's unit directory.
UNIT=deploy/systemd/ollama-tracer.service
SDROOT=$WORK/sdroot
mkdir -p "$SDROOT/usr/local/bin" "$SDROOT/etc/systemd/system" "$SDROOT/usr/lib/systemd"
cp -r /lib/systemd/system "$SDROOT/usr/lib/systemd/" 2>/dev/null || true
if [ -n "$BIN" ]; then cp "$BIN" "$SDROOT/usr/local/bin/ollama-tracer"; else
  printf '#!/bin/sh\n' >"$SDROOT/usr/local/bin/ollama-tracer"
fi
chmod 0755 "$SDROOT/usr/local/bin/ollama-tracer"
cp "$UNIT" "$SDROOT/etc/systemd/system/"
sd_verify() {
  # Exit code 0 even for unknown keys: any message is a failure.
  systemd-analyze verify --root="$SDROOT" --man=no ollama-tracer.service >"$WORK/sdv" 2>&1 || true
  cat "$WORK/sdv"
  [ ! -s "$WORK/sdv" ]
}
sd_security() {
  # --threshold counts in tenths: 30 = exposure 3.0 ("OK" band is below 4).
  systemd-analyze security --offline=true --root="$SDROOT" --threshold=30 ollama-tracer.service >"$WORK/sds" 2>&1 || {
    cat "$WORK/sds"
    return 1
  }
  grep 'Overall exposure level' "$WORK/sds" | sed 's/^→ //'
}
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify $UNIT" sd_verify
  check "systemd-analyze security $UNIT (exposure <= 3.0)" sd_security
  sed 's/^/    /' "$WORK/log"
else
  echo "[deploy] skip  systemd-analyze not installed"
fi

# --- The release binary, with the deployed privileges -------------------------------------------
if [ -n "$BIN" ]; then
  version() {
    local want
    want=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
    "$BIN" --version
    # "ollama-tracer 0.1.0 (commit 5b7f344c1a2b, x86_64-unknown-linux-musl, eBPF built in)"
    case "$("$BIN" --version)" in
    "ollama-tracer $want (commit "*", eBPF built in)") ;;
    *) return 1 ;;
    esac
  }
  check "$BIN --version" version
  tracer_check() {
    local rc=0
    "$BIN" check || rc=$?
    echo "exit code $rc"
    # As root the eBPF capture must be possible (exit 0); without root, any verdict (0, 1, 2)
    # will do, as long as it is one.
    if [ "$(id -u)" = 0 ]; then [ "$rc" = 0 ]; else [ "$rc" -le 2 ]; fi
  }
  check "$BIN check" tracer_check
  if [ "$(id -u)" = 0 ]; then
    check "binary with the DaemonSet's privileges (emulated pod) traces a call" \
      "$PY" scripts/deploy-smoke.py --binary "$BIN" --daemonset "$WORK/default.yaml" --unit "$UNIT" --only k8s
    check "binary with the unit's privileges and syscall filter traces a call" \
      "$PY" scripts/deploy-smoke.py --binary "$BIN" --daemonset "$WORK/default.yaml" --unit "$UNIT" --only systemd
  else
    echo "[deploy] skip  privileged runs of the binary: not root"
  fi
fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
