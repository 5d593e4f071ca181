//! Child processes for the benchmarks: started with a guard that ends them (by pid) on any
//! outcome, measured with `wait4` (CPU time and peak RSS of exactly that child), sampled
//! through `/proc` while they run.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A child process ended on drop: SIGTERM, up to 5 s, then SIGKILL.
pub struct Guarded {
    pub child: Child,
    pub name: String,
}

impl Guarded {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Guarded> {
        let child = cmd.spawn().with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Guarded { child, name: name.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` and waits up to `grace` for the exit (SIGKILL after that).
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        // SAFETY: kill on our own child's pid, not reaped yet (so not reused).
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Fails when the process has exited already.
    pub fn check_running(&mut self) -> Result<()> {
        if let Ok(Some(st)) = self.child.try_wait() {
            bail!("{} exited early ({st})", self.name);
        }
        Ok(())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(5));
    }
}

/// What one measured run of a command cost.
#[derive(Clone, Debug)]
pub struct Measured {
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub max_rss_kib: u64,
    pub stderr: String,
}

impl Measured {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    pub fn json(&self) -> Value {
        json!({
            "wall_s": self.wall_s, "user_s": self.user_s, "sys_s": self.sys_s, "cpu_s": self.cpu_s(),
            "max_rss_mib": self.max_rss_kib as f64 / 1024.0,
        })
    }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Runs `cmd` to completion, stdout to `stdout` (a file, or /dev/null), and measures it with
/// `wait4`: wall time, user and system CPU, peak RSS of that process alone. Fails on a
/// non-zero exit, showing its stderr.
pub fn measure(name: &str, cmd: &mut Command, stdout: &Path) -> Result<Measured> {
    let err_path = std::env::temp_dir().join(format!("xtask-bench-{}-{name}.stderr", std::process::id()));
    let out = File::create(stdout).with_context(|| format!("creating {}", stdout.display()))?;
    let err = File::create(&err_path)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let t = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot start {name} ({cmd:?})"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; status and ru are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_s = t.elapsed().as_secs_f64();
    // Reaped by wait4: `Child` must not wait for (or signal) that pid again.
    std::mem::forget(child);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    if r != pid {
        bail!("wait4 on {name}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{name} failed (wait status {status}):\n{}", tail(&stderr, 40));
    }
    Ok(Measured { wall_s, user_s: tv(ru.ru_utime), sys_s: tv(ru.ru_stime), max_rss_kib: ru.ru_maxrss as u64, stderr })
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU time (user + system) of a running process, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Memory of a running process, KiB: `/proc/PID/status` fields, and how much of the resident
/// set is mappings of BPF maps (the eBPF ring buffer: its data pages are mapped twice).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub bpf_maps: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut bpf_maps = 0;
        if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) {
            let mut in_bpf = false;
            for l in smaps.lines() {
                // Mapping header lines start with an address range; field lines with a name.
                if l.split_whitespace().next().is_some_and(|a| a.contains('-') && !a.ends_with(':')) {
                    in_bpf = l.contains("bpf");
                } else if in_bpf && let Some(v) = l.strip_prefix("Rss:") {
                    bpf_maps += v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                }
            }
        }
        Some(Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
            shmem: field("RssShmem:"),
            bpf_maps,
        })
    }

    pub fn json(&self) -> Value {
        let m = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
        json!({
            "rss_mib": m(self.rss), "peak_rss_mib": m(self.hwm), "anon_mib": m(self.anon), "file_mib": m(self.file),
            "shmem_mib": m(self.shmem), "bpf_map_mappings_mib": m(self.bpf_maps),
            "rss_without_bpf_maps_mib": m(self.rss.saturating_sub(self.bpf_maps)),
        })
    }
}

/// The three load averages.
pub fn loadavg() -> Value {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = s.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    json!(v)
}

/// Raises the open-file limit to `want` (soft and hard; root may raise the hard one), or at
/// least the soft one to the hard one; fails below `need`. Children inherit it.
pub fn raise_nofile(want: u64, need: u64) -> Result<u64> {
    // SAFETY: an all-zero rlimit is valid for getrlimit to overwrite.
    let mut cur: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: cur is valid for writes.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    if cur.rlim_cur >= want {
        return Ok(cur.rlim_cur);
    }
    let lim = libc::rlimit { rlim_cur: want, rlim_max: want.max(cur.rlim_max) };
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        return Ok(want);
    }
    // No CAP_SYS_RESOURCE (or above fs.nr_open): as far as the hard limit goes.
    let soft = libc::rlimit { rlim_cur: cur.rlim_max.min(want), rlim_max: cur.rlim_max };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    if soft.rlim_cur < need {
        bail!("cannot raise the open-file limit to {need} (hard limit {})", cur.rlim_max);
    }
    Ok(soft.rlim_cur)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The number just before `label` in `text` ("27 calls" → 27).
pub fn num_before(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)?;
    let head = text[..at].trim_end();
    let digits: String = head.chars().rev().take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The number right after `label` in `text` ("drops: 3" → 3).
pub fn num_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// The tracer's end-of-run summary (stderr), the figures the benchmarks report.
#[derive(Clone, Debug, Default)]
pub struct TracerSummary {
    pub packets: u64,
    pub payload_bytes: u64,
    pub calls: u64,
    pub spans: u64,
    pub incomplete: u64,
    pub gaps: u64,
    pub kernel_drops: u64,
    pub text: String,
}

impl TracerSummary {
    pub fn parse(stderr: &str) -> Result<TracerSummary> {
        let at = stderr.find("ollama-tracer summary:").context("no summary in the tracer's stderr")?;
        let text = stderr[at..].to_owned();
        let first = text.lines().next().unwrap_or("");
        let get = |v: Option<u64>, what: &str| v.with_context(|| format!("summary without {what}:\n{text}"));
        Ok(TracerSummary {
            packets: get(num_before(first, " packets"), "packets")?,
            payload_bytes: get(num_before(first, " bytes"), "bytes")?,
            calls: get(num_before(first, " calls"), "calls")?,
            spans: get(num_before(first, " spans"), "spans")?,
            incomplete: get(num_after(&text, "incomplete spans: "), "incomplete spans")?,
            gaps: get(num_after(&text, "gaps: "), "gaps")?,
            kernel_drops: get(num_after(&text, "kernel drops: "), "kernel drops")?,
            text,
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "packets": self.packets, "payload_bytes": self.payload_bytes, "calls": self.calls, "spans": self.spans,
            "incomplete_spans": self.incomplete, "gaps": self.gaps, "kernel_drops": self.kernel_drops,
            "summary": self.text.lines().map(str::trim).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tracer_summary() {
        let s = "log line\nollama-tracer summary: 2646 packets, 368254 bytes, 6 connections, 18 calls, 17 spans\n  gaps: 2 (10 bytes missing), incomplete spans: 1, errors: 0, parse errors: 0\n  frames: 2646 read, 0 ignored, 0 malformed, 0 unsupported, 0 IP fragments; kernel drops: 5\n";
        let t = TracerSummary::parse(s).unwrap();
        assert_eq!(
            (t.packets, t.payload_bytes, t.calls, t.spans, t.gaps, t.incomplete, t.kernel_drops),
            (2646, 368254, 18, 17, 2, 1, 5)
        );
        assert!(TracerSummary::parse("no summary").is_err());
    }

    #[test]
    fn measures_a_child() {
        let out = std::env::temp_dir().join(format!("xtask-measure-{}.out", std::process::id()));
        let m = measure("sh", Command::new("sh").args(["-c", "echo hi; head -c 20000000 /dev/zero | wc -c"]), &out)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hi\n20000000\n");
        assert!(m.max_rss_kib > 0 && m.wall_s > 0.0);
        assert!(measure("false", &mut Command::new("false"), &out).is_err());
        std::fs::remove_file(out).unwrap();
    }

    #[test]
    fn reads_this_process() {
        let m = Memory::of(std::process::id()).unwrap();
        assert!(m.rss > 0 && m.hwm >= m.rss && m.anon > 0, "{m:?}");
        assert!(cpu_time(std::process::id()).is_some());
    }
}
