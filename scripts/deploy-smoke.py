#!/usr/bin/env python3
"""Runs the release binary with the privileges the deployment files give it, and checks it traces.

No container runtime and no systemd (as PID 1) here, so each deployment is emulated with the
same kernel mechanisms:

  k8s      the DaemonSet rendered from the chart: uid 0, capability bounding set = exactly the
           container's `capabilities.add` (drop ALL), no_new_privs (allowPrivilegeEscalation:
           false), own mount and cgroup namespaces, read-only root (readOnlyRootFilesystem), the
           node's cgroup v2 hierarchy bind-mounted read-only where the hostPath volume goes,
           and the container's args (port swapped for a test port).
  systemd  deploy/systemd/ollama-tracer.service: a non-root uid holding exactly the unit's
           AmbientCapabilities (= CapabilityBoundingSet), no_new_privs, read-only root and
           cgroup fs (ProtectSystem=strict, ProtectControlGroups), run under strace: every
           system call made after exec must be allowed by the unit's SystemCallFilter (expanded
           with `systemd-analyze syscall-filter`).

In both, a local HTTP server on a free port gets one request; the tracer must print its span
and exit 0 on SIGTERM. Needs root (namespaces, capabilities). Run with the deploy-tools venv
(PyYAML).

  deploy-smoke.py --binary BIN --daemonset RENDERED.yaml --unit UNIT [--only k8s|systemd]
"""

import argparse
import functools
import http.server
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

ATTACH_TIMEOUT = 90  # seconds: loading the programs runs the verifier; a busy CI machine is slow


def cgroup2_mount() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.split(" ")[0] == "cgroup2" and left.split(" ")[3] == "/":
                return left.split(" ")[4]
    raise SystemExit("no cgroup2 hierarchy mounted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(port: int, root: str) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(Quiet, directory=root)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def setpriv_caps(caps: list[str]) -> str:
    """`CAP_BPF`/`BPF` list -> setpriv's `-all,+bpf,...`."""
    names = [c.lower().removeprefix("cap_") for c in caps]
    return ",".join(["-all"] + [f"+{n}" for n in names])


def run_traced(shell: str, port: int, tracer_pid_of, label: str) -> tuple[int, str, str]:
    """Starts `sh -c shell`, waits for the capture to attach, sends one request, stops the tracer."""
    out = tempfile.TemporaryFile(mode="w+")
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(["sh", "-c", shell], stdout=out, stderr=err, start_new_session=True)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    attached = False
    while time.monotonic() < deadline and proc.poll() is None:
        err.seek(0)
        if "capture:" in err.read():
            attached = True
            break
        time.sleep(0.2)
    if attached:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            r.read()
        time.sleep(1.0)
        pid = tracer_pid_of(proc)
        if pid:
            os.kill(pid, signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    out.seek(0)
    err.seek(0)
    o, e = out.read(), err.read()
    if not attached:
        print(f"{label}: the capture did not start:\n{e}", file=sys.stderr)
    return rc, o, e


def child_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as fh:
            kids = fh.read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def expect_span(label: str, rc: int, out: str, err: str, port: int, backend: str) -> bool:
    """Exit 0, the request's span on stdout, and the capture backend the deployment intends."""
    capture = next((ln for ln in err.splitlines() if "capture:" in ln), "capture: ?")
    capture = re.sub(r"\x1b\[[0-9;]*m", "", capture).split("capture:", 1)[1].strip()
    ok = rc == 0 and re.search(rf"127\.0\.0\.1:{port} GET / 200", out) is not None and capture.startswith(backend)
    # Once attached, the daemon gives up its capabilities: the deployment must let it (capset).
    dropped = re.search(r"privileges: (dropped [0-9]+ capabilities[^\n]*)", re.sub(r"\x1b\[[0-9;]*m", "", err))
    ok = ok and dropped is not None and "cannot drop capabilities" not in err
    if ok:
        print(f"{label}: ok: exit 0, span seen ({capture}), {dropped.group(1)}")
    else:
        print(f"{label}: FAILED (exit {rc})\n--- stdout\n{out}\n--- stderr\n{err}", file=sys.stderr)
    return ok


def k8s(binary: str, daemonset_file: str, work: str) -> bool:
    docs = [d for d in yaml.safe_load_all(open(daemonset_file, encoding="utf-8")) if d]
    ds = next(d for d in docs if d.get("kind") == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged"), "expected drop ALL, not privileged"
    caps = sc["capabilities"]["add"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    port = free_port()
    mounts = []
    args = []
    remap = {}
    for vm in c.get("volumeMounts", []):
        host = volumes[vm["name"]]["hostPath"]["path"]
        if host.startswith("/sys/fs/cgroup"):
            host = cgroup2_mount()  # this machine's hierarchy (may be /sys/fs/cgroup/unified)
        target = os.path.join(work, "k8s" + vm["mountPath"].replace("/", "_"))
        os.makedirs(target, exist_ok=True)
        remap[vm["mountPath"]] = target
        ro = ",ro" if vm.get("readOnly") else ""
        mounts.append(f"mount --bind {shlex.quote(host)} {target} && mount -o remount,bind{ro} {target}")
    help_text = subprocess.run([binary, "run", "--help"], capture_output=True, text=True).stdout
    for a in c["args"]:
        if a.startswith("--port="):
            a = f"--port={port}"
        flag = a.split("=", 1)[0]
        if flag.startswith("--") and flag not in help_text:
            print(f"k8s: note: this binary has no {flag} yet: left out of this run")
            continue
        for src, dst in remap.items():
            a = a.replace(src, dst)
        args.append(a)
    if pod.get("securityContext", {}).get("runAsUser", 0) != 0:
        raise SystemExit("k8s: expected runAsUser 0")
    nnp = "--no-new-privs" if sc.get("allowPrivilegeEscalation") is False else ""
    ro_root = "mount -o remount,bind,ro / &&" if sc.get("readOnlyRootFilesystem") else ""
    priv = setpriv_caps(caps)
    cmd = " ".join(shlex.quote(x) for x in [binary, *args])
    shell = (
        f"exec unshare --mount --cgroup --propagation private sh -c "
        + shlex.quote(f"{' && '.join(mounts) or 'true'} && {ro_root} "
                      f"exec setpriv --reuid=0 --regid=0 --clear-groups --inh-caps={priv} --bounding-set={priv} {nnp} -- {cmd}")
    )
    print(f"k8s: capabilities {caps}, args {args}")
    srv = serve(port, work)
    try:
        rc, out, err = run_traced(shell, port, lambda p: p.pid, "k8s")
    finally:
        srv.shutdown()
    backend = "pcap" if "--capture=pcap" in args else "eBPF"
    ok = expect_span("k8s", rc, out, err, port, backend)
    # The host's cgroup root, mounted elsewhere in the pod, is still the root: loopback packets
    # are taken once, at the sender's egress, not again at ingress.
    if ok and backend == "eBPF" and " 0 duplicate bytes" not in err:
        print(f"k8s: FAILED: loopback packets captured twice\n{err}", file=sys.stderr)
        ok = False
    return ok


@functools.lru_cache(None)
def expand(group: str) -> frozenset:
    text = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in text.splitlines()[1:]:
        s = line.strip()
        if s and not s.startswith("#"):
            names |= expand(s) if s.startswith("@") else {s}
    return frozenset(names)


def unit_settings(path: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            settings.setdefault(k, []).append(v)
    return settings


def syscall_filter(lines: list[str]) -> set[str]:
    """The allow-list that successive SystemCallFilter= lines make (first line an allow-list)."""
    allowed: set[str] = set()
    for i, line in enumerate(lines):
        deny = line.startswith("~")
        items: set[str] = set()
        for item in line.lstrip("~").split():
            items |= expand(item) if item.startswith("@") else {item}
        if i == 0 and deny:
            raise SystemExit("systemd: expected SystemCallFilter to start with an allow-list")
        allowed = allowed - items if deny else allowed | items
    return allowed


def systemd(binary: str, unit: str, work: str) -> bool:
    s = unit_settings(unit)
    ambient = s["AmbientCapabilities"][-1].split()
    bounding = s["CapabilityBoundingSet"][-1].split()
    assert sorted(ambient) == sorted(bounding), "ambient and bounding sets should be the same"
    assert s.get("NoNewPrivileges") == ["yes"] and s.get("DynamicUser") == ["yes"]
    allowed = syscall_filter(s["SystemCallFilter"])
    if not shutil.which("strace"):
        print("systemd: strace missing: the syscall filter is not checked", file=sys.stderr)
        return False
    port = free_port()
    args = shlex.split(s["ExecStart"][-1].replace("$OLLAMA_TRACER_ARGS", ""))[1:]  # after the binary
    args += [f"--port={port}", "--output=text"]
    priv = setpriv_caps(ambient)
    trace = os.path.join(work, "strace.txt")
    cgroup = cgroup2_mount()
    # ProtectSystem=strict / ProtectControlGroups: read-only root and cgroup fs (mount namespace);
    # the work directory stays writable for strace's log (the tracer writes nothing).
    prep = (
        f"mount --bind {work} {work} && mount -o remount,bind,ro / && "
        f"mount --bind {cgroup} {cgroup} && mount -o remount,bind,ro {cgroup}"
    )
    cmd = " ".join(shlex.quote(x) for x in [binary, *args])
    shell = "exec unshare --mount --propagation private sh -c " + shlex.quote(
        f"{prep} && exec strace -f -qq -o {trace} setpriv --reuid=65534 --regid=65534 --clear-groups "
        f"--inh-caps={priv} --ambient-caps={priv} --bounding-set={priv} --no-new-privs -- {cmd}"
    )
    print(f"systemd: uid 65534, ambient capabilities {ambient}, args {args[:-2]}")
    srv = serve(port, work)
    try:
        rc, out, err = run_traced(shell, port, lambda p: child_pid(p.pid), "systemd")
    finally:
        srv.shutdown()
    # The unit runs `auto`: with its capabilities, eBPF must be the one chosen.
    ok = expect_span("systemd", rc, out, err, port, "eBPF")
    # System calls of the tracer: after its own execve (setpriv's set-up happens before systemd's
    # seccomp filter would apply).
    used: set[str] = set()
    started = False
    for line in open(trace, encoding="utf-8") if os.path.exists(trace) else []:
        m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
        if not m:
            continue
        if not started:
            started = m.group(1) == "execve" and binary in line and line.rstrip().endswith("= 0")
            continue
        used.add(m.group(1))
    if not started or not used:
        print("systemd: FAILED: no system calls of the tracer in the strace log", file=sys.stderr)
        return False
    missing = sorted(used - allowed)
    if missing:
        print(f"systemd: FAILED: SystemCallFilter refuses {missing}", file=sys.stderr)
        return False
    print(f"systemd: ok: SystemCallFilter allows all {len(used)} system calls the tracer made")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True)
    p.add_argument("--daemonset", required=True, help="chart rendered with default values")
    p.add_argument("--unit", required=True)
    p.add_argument("--only", choices=["k8s", "systemd"])
    a = p.parse_args()
    if os.geteuid() != 0:
        print("SKIPPED: not root")
        return 0
    binary = os.path.abspath(a.binary)
    with tempfile.TemporaryDirectory(prefix="ollama-tracer-smoke-") as work:
        os.chmod(work, 0o755)
        ok = True
        if a.only in (None, "k8s"):
            ok &= k8s(binary, a.daemonset, work)
        if a.only in (None, "systemd"):
            ok &= systemd(binary, a.unit, work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
