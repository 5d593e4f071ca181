#!/usr/bin/env bash
# The static binary on the kernels people run: boots Debian's kernel of each release under QEMU
# with a RAM-only userland (busybox and the binary: it is static, so
# nothing else is needed), and runs there what the live tests check on this machine, focused:
#
#   check   `ollama-tracer check` (exit 0: the eBPF capture is possible)
#   ebpf    `run --capture ebpf` (cgroup_skb on the cgroup v2 root) traces a local HTTP exchange
#           (busybox wget to a busybox nc serving a canned Ollama /api/chat reply) as one span
#           with the reply's numbers
#   pcap    the same with `--capture pcap` (the libpcap linked into the binary)
#   tcx     `--capture ebpf --ebpf-attach tcx --interface lo`: a span on 6.6 and later; before,
#           a refusal that names the kernel and what to use instead
#   auto    `--ebpf-attach tcx --interface lo` with the default `--capture auto`: a span, by
#           libpcap on kernels before 6.6, saying why in its ready line
#
# Not part of `cargo xtask test` (a few minutes, and 200 MB of kernel packages the first time);
# docs/deploy.md has the results. Kernels: Debian's linux-image-amd64 of each RELEASE, fetched
# with apt through a private source list (the system's apt configuration is not touched).
#
# Usage: scripts/kernel-matrix.sh [--binary BIN] [RELEASE...]   (default: bullseye bookworm trixie)
# Env: KERNEL_MATRIX_ACCEL=tcg|kvm (default tcg, below). Exit status 0 when every kernel did
# what it should.
set -euo pipefail
SETUP_TAG=kernel-matrix
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BIN=""
RELEASES=()
while [ $# -gt 0 ]; do
  case "$1" in
  --binary) BIN=$2; shift 2 ;;
  -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
  *) RELEASES+=("$1"); shift ;;
  esac
done
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(bullseye bookworm trixie)

apt_ensure "booting other kernels: QEMU, busybox (the guest's userland), cpio (its initramfs), xz and zstd (kernel modules)" \
  qemu-system-x86 busybox-static cpio xz-utils zstd
if [ -z "$BIN" ]; then
  BIN=$(bash "$ROOT/scripts/build-dist.sh" | tail -1)
fi
WORK=${CARGO_TARGET_DIR:-$ROOT/target}/kernel-matrix
mkdir -p "$WORK"
# Emulated by default: about 15 s a kernel. KERNEL_MATRIX_ACCEL=kvm uses KVM, where it runs
# standard kernels (the nested KVM of the machine these results come from does not: QEMU aborts
# on MSR 0x10a with -cpu host, and the guest hangs after "Probing EDD" with other models).
accel=(-accel tcg -smp 1)
if [ "${KERNEL_MATRIX_ACCEL:-tcg}" = kvm ]; then accel=(-enable-kvm -cpu host -smp 2); fi

# --- the guest's userland ----------------------------------------------------------------------
guest=$WORK/guest
rm -rf "$guest"
mkdir -p "$guest"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$guest/bin/busybox"
install -m 0755 "$BIN" "$guest/ollama-tracer"
printf '%s' '{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"stream":false}' \
  >"$guest/request.json"
reply='{"model":"llama3.2","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"Rayleigh scattering."},"done_reason":"stop","done":true,"total_duration":90000000,"load_duration":1000000,"prompt_eval_count":26,"prompt_eval_duration":20000000,"eval_count":5,"eval_duration":60000000}'
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
  "${#reply}" "$reply" >"$guest/reply.http"
# One HTTP exchange on nc's socket: the request read whole (head, then Content-Length bytes)
# before the canned reply goes out, as a server would.
cat >"$guest/handler.sh" <<'EOF'
#!/bin/busybox sh
cr=$(printf '\r')
len=0
while IFS= read -r line; do
  line=${line%"$cr"}
  [ -z "$line" ] && break
  case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*:}; len=${len# } ;; esac
done
head -c "$len" >/tmp/request-body
cat /reply.http
EOF
cat >"$guest/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ip link set lo up
for m in /modules/*.ko; do [ -f "$m" ] && insmod "$m"; done
result() { echo "RESULT $1 $2 ${3:-}"; }
echo "KERNEL $(uname -r)"
/ollama-tracer --version
/ollama-tracer check >/tmp/check 2>&1
rc=$?
cat /tmp/check
if [ "$rc" = 0 ]; then result check PASS "exit 0"; else result check FAIL "exit $rc"; fi

# exchange NAME ARGS...: the tracer started with ARGS, one /api/chat exchange, the span checked.
exchange() {
  name=$1
  shift
  /ollama-tracer run --output json --port 11434 "$@" >/tmp/$name.out 2>/tmp/$name.err &
  pid=$!
  i=0
  while ! grep -qs 'ready: ' /tmp/$name.err && kill -0 $pid 2>/dev/null && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if ! grep -q 'ready: ' /tmp/$name.err; then
    kill -TERM $pid 2>/dev/null
    wait $pid
    sed "s/^/  $name: /" /tmp/$name.err
    result "$name" REFUSED "$(grep -o 'error: .*' /tmp/$name.err | head -1)"
    return
  fi
  nc -l -p 11434 -e /handler.sh &
  srv=$!
  sleep 0.3
  wget -q -O /tmp/$name.reply --header 'Content-Type: application/json' --post-file /request.json \
    http://127.0.0.1:11434/api/chat
  sleep 1
  kill -TERM $pid
  wait $pid
  rc=$?
  kill $srv 2>/dev/null
  sed "s/^/  $name: /" /tmp/$name.err
  spans=$(grep -c '"name":"chat llama3.2"' /tmp/$name.out)
  span=$(grep '"name":"chat llama3.2"' /tmp/$name.out)
  ready=$(grep -o 'ready: .*' /tmp/$name.err | head -1)
  case "$span" in
  *'"gen_ai.usage.input_tokens":26'*'"gen_ai.usage.output_tokens":5'*)
    if [ "$spans" = 1 ] && [ "$rc" = 0 ]; then result "$name" PASS "$ready"; else result "$name" FAIL "$spans spans, exit $rc"; fi ;;
  *) result "$name" FAIL "$spans spans, exit $rc: $(head -c 300 /tmp/$name.out)" ;;
  esac
}
exchange ebpf --capture ebpf
exchange pcap --capture pcap
exchange tcx --capture ebpf --ebpf-attach tcx --interface lo
exchange auto --ebpf-attach tcx --interface lo
echo "MATRIX DONE"
poweroff -f
EOF
chmod 0755 "$guest/init" "$guest/handler.sh"

# --- each kernel -------------------------------------------------------------------------------
failed=0
summary=()
for rel in "${RELEASES[@]}"; do
  dir=$WORK/$rel
  mkdir -p "$dir"
  opts=$(debian_apt_dir "$dir/apt" deb "$rel")
  # shellcheck disable=SC2086 # a list of options
  pkg=$(apt-cache $opts depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    say "$rel: no kernel package found"
    failed=1
    continue
  fi
  if ! ls "$dir/${pkg}"_*.deb >/dev/null 2>&1; then
    say "$rel: downloading $pkg (Debian's kernel)"
    # shellcheck disable=SC2086
    (cd "$dir" && quietly apt-get $opts download "$pkg")
  fi
  rm -rf "$dir/root"
  dpkg-deb -x "$(ls "$dir/${pkg}"_*.deb | head -1)" "$dir/root"
  vmlinuz=$(ls "$dir"/root/boot/vmlinuz-* | head -1)
  kver=${vmlinuz##*/vmlinuz-}
  # The libpcap fallback needs packet sockets: a module in Debian's kernels.
  rm -rf "$guest/modules"
  mkdir -p "$guest/modules"
  mod=$(find "$dir"/root/lib/modules/"$kver" "$dir"/root/usr/lib/modules/"$kver" -name 'af_packet.ko*' 2>/dev/null | head -1 || true)
  case "$mod" in
  *.ko) cp "$mod" "$guest/modules/" ;;
  *.ko.xz) xz -dc "$mod" >"$guest/modules/af_packet.ko" ;;
  *.ko.zst) zstd -qdc "$mod" >"$guest/modules/af_packet.ko" ;;
  esac
  (cd "$guest" && find . | cpio -o -H newc --quiet) | gzip -1 >"$dir/initramfs.gz"
  log=$dir/console.log
  say "$rel: booting $kver"
  timeout 300 qemu-system-x86_64 "${accel[@]}" -m 1024 -nodefaults -no-user-config -display none \
    -serial "file:$log" -no-reboot -kernel "$vmlinuz" -initrd "$dir/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet" || true
  tr -d '\r' <"$log" >"$log.txt"
  grep -E '^(RESULT|KERNEL|ollama-tracer )' "$log.txt" | sed "s/^/  /"
  res() { grep -E "^RESULT $1 " "$log.txt" | head -1 | awk '{print $3}'; }
  minor=$(echo "$kver" | awk -F. '{print $1 * 1000 + $2}')
  want_tcx=PASS
  if [ "$minor" -lt 6006 ]; then want_tcx=REFUSED; fi
  verdict=ok
  for c in check ebpf pcap auto; do [ "$(res $c)" = PASS ] || verdict=FAILED; done
  [ "$(res tcx)" = "$want_tcx" ] || verdict=FAILED
  if [ "$want_tcx" = REFUSED ] && ! grep -q "^RESULT tcx REFUSED .*older than 6.6 (TCX links)" "$log.txt"; then verdict=FAILED; fi
  if ! grep -q '^MATRIX DONE' "$log.txt"; then verdict="FAILED (did not finish; see $log.txt)"; fi
  [ "$verdict" = ok ] || failed=1
  summary+=("$rel $kver: check $(res check), ebpf $(res ebpf), pcap $(res pcap), tcx $(res tcx) (want $want_tcx), auto $(res auto): $verdict")
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
