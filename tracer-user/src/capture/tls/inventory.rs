//! What `ollama-tracer check` says about TLS, per process: which TLS stack each process uses
//! (its executable and the TLS libraries it maps) and whether the uprobes see it — or why not
//! (a Go program without symbols, OpenSSL linked in without symbols, rustls, GnuTLS, NSS …).
//! Reads `/proc` and the files; loads nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::binary::TlsStack;
use super::targets::{Inspections, candidates, exe_of, pids};

/// TLS libraries the probes do not know, by a part of their file name.
const OTHER_LIBRARIES: [(&str, &str); 5] = [
    ("libgnutls", "GnuTLS"),
    ("libnss3", "NSS"),
    ("libwolfssl", "wolfSSL"),
    ("libmbedtls", "Mbed TLS"),
    ("libs2n", "s2n-tls"),
];

/// One process's TLS stacks.
#[derive(Clone, Debug)]
pub struct ProcessTls {
    pub pid: u32,
    pub exe: String,
    /// File (as the process sees it) and what it holds.
    pub stacks: Vec<(String, Arc<TlsStack>)>,
}

impl ProcessTls {
    /// Whether every stack of the process is probed.
    pub fn seen(&self) -> bool {
        self.stacks.iter().all(|(_, s)| matches!(**s, TlsStack::OpenSsl(_) | TlsStack::Go(_)))
    }
}

/// Every process under `proc_root` with a TLS stack, probed or not.
pub fn gather(proc_root: &Path) -> Vec<ProcessTls> {
    let mut inspections = Inspections::default();
    let mut out = Vec::new();
    let me = std::process::id();
    for pid in pids(proc_root).into_iter().filter(|&p| p != me) {
        let Some(exe) = exe_of(proc_root, pid) else { continue };
        let mut stacks: Vec<(String, Arc<TlsStack>)> = candidates(proc_root, pid)
            .iter()
            .map(|c| (c.shown.clone(), inspections.stack(c)))
            .filter(|(_, s)| **s != TlsStack::None)
            .collect();
        let maps = std::fs::read_to_string(proc_root.join(pid.to_string()).join("maps")).unwrap_or_default();
        let mut other: BTreeMap<String, &str> = BTreeMap::new();
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            let base = path.rsplit('/').next().unwrap_or(path);
            if let Some((_, name)) = OTHER_LIBRARIES.iter().find(|(part, _)| base.starts_with(part)) {
                other.insert(path.to_owned(), name);
            }
        }
        for (path, name) in other {
            stacks.push((path, Arc::new(TlsStack::NotProbed(format!("{name}: not probed")))));
        }
        if !stacks.is_empty() {
            out.push(ProcessTls { pid, exe, stacks });
        }
    }
    out
}

/// The report's lines: one per process, its stacks and whether they are seen.
pub struct Report<'a>(pub &'a [ProcessTls]);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "TLS processes:   none found (no process maps a TLS library or runs Go's crypto/tls)");
        }
        let unseen = self.0.iter().filter(|p| !p.seen()).count();
        write!(f, "TLS processes:   {} ({} not fully seen)", self.0.len(), unseen)?;
        for p in self.0 {
            let stacks: Vec<String> = p
                .stacks
                .iter()
                .map(|(file, s)| {
                    let seen = matches!(**s, TlsStack::OpenSsl(_) | TlsStack::Go(_));
                    match (file == &p.exe, seen) {
                        (true, true) => format!("{s} linked in: probed"),
                        (false, true) => format!("{s} in {file}: probed"),
                        (true, false) => s.to_string(),
                        (false, false) => format!("{file}: {s}"),
                    }
                })
                .collect();
            write!(f, "\n  {:>7} {}: {}", p.pid, p.exe, stacks.join("; "))?;
        }
        Ok(())
    }
}
