//! The project's shape, checked on every test run (docs/architecture.md says why it matters):
//!
//! - no import circle between the modules of any crate: neither between the top-level modules
//!   nor between the submodules of one module (a `use` that points from an earlier stage back
//!   to a later one shows up here);
//! - the core crate's normal dependencies hold no I/O, runtime, exporter or CLI crate (the
//!   compiler then enforces "no I/O in a stage");
//! - nothing the tests or the tools run reads outside the repository (a fresh clone with no
//!   `../shared` beside it tests on its own; `cargo xtask test` also proves it on a copy).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The crates' module trees: (crate, source root, directories under the root that are other
/// crates and not modules).
fn crates() -> Vec<(&'static str, PathBuf, Vec<&'static str>)> {
    let r = repo();
    vec![
        ("tracer-common", r.join("tracer-common/src"), vec![]),
        ("tracer-core", r.join("tracer-core/src"), vec![]),
        ("tracer-ebpf", r.join("tracer-ebpf/src"), vec![]),
        ("tracer-user (lib)", r.join("tracer-user/src"), vec!["bin"]),
        ("ollama-tracer (bin)", r.join("tracer-user/src/bin/ollama-tracer"), vec![]),
        ("testkit", r.join("tests/src"), vec!["bin"]),
        ("xtask", r.join("xtask/src"), vec![]),
    ]
}

fn rust_files(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("source dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !skip.contains(&name) {
                rust_files(&p, &[], out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below its crate root (`capture/ebpf/mod.rs` → `capture::ebpf`).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("under the root");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Source without comments (doc links name modules without depending on them).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    // Whitespace only matters in `x as y`.
    let mut tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    for p in [":", "{", "}", ","] {
        tree = tree.replace(&format!(" {p}"), p).replace(&format!("{p} "), p);
    }
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        match t.find('{') {
            None => out.push(format!("{prefix}{t}")),
            Some(open) => {
                let head = &t[..open];
                let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
                let mut depth = 0;
                let mut start = 0;
                for (i, ch) in inner.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&format!("{prefix}{head}"), &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                go(&format!("{prefix}{head}"), &inner[start..], out);
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out.retain(|p| !p.is_empty() && !p.ends_with("::"));
    out
}

/// The module paths a file refers to, resolved against its own module path: `crate::…`,
/// `super::…` and `self::…` in `use` trees and inline paths.
fn references(src: &str, me: &[String]) -> Vec<Vec<String>> {
    let src = strip_comments(src);
    let mut paths = Vec::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("use ") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before_ok {
            let tree = after[..end].trim();
            if tree.starts_with("crate") || tree.starts_with("super") || tree.starts_with("self") {
                paths.extend(expand(tree));
            }
        }
        rest = &after[end.min(after.len())..];
    }
    // Inline paths, e.g. `crate::privileges::restrict(…)`.
    let bytes = src.as_bytes();
    for kw in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = src[from..].find(kw).map(|i| i + from) {
            from = i + kw.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':') {
                continue;
            }
            let end = src[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(src.len(), |e| i + e);
            paths.push(src[i..end].trim_end_matches(':').to_string());
        }
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let mut segs = p.split("::").map(str::to_string).collect::<Vec<_>>().into_iter().peekable();
            let mut base: Vec<String> = match segs.next()?.as_str() {
                "crate" => Vec::new(),
                "self" => me.to_vec(),
                "super" => me[..me.len().checked_sub(1)?].to_vec(),
                _ => return None,
            };
            while segs.peek().is_some_and(|s| s == "super") {
                segs.next();
                base.pop()?;
            }
            base.extend(segs.filter(|s| s != "self" && s != "*"));
            Some(base)
        })
        .collect()
}

/// Circles in a directed graph (Tarjan's strongly connected components of two or more).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(t: &mut T<'_>, v: &str) {
        let i = t.index.len();
        t.index.insert(v.to_string(), i);
        t.low.insert(v.to_string(), i);
        t.stack.push(v.to_string());
        t.on.insert(v.to_string());
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().expect("on the stack");
                t.on.remove(&w);
                let done = w == v;
                scc.push(w);
                if done {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The modules of a crate's tree, by parent: `{parent path: {child module names}}`.
fn module_tree(root: &Path, files: &[PathBuf]) -> BTreeMap<Vec<String>, BTreeSet<String>> {
    let mut tree: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(root, f);
        for depth in 0..m.len() {
            tree.entry(m[..depth].to_vec()).or_default().insert(m[depth].clone());
        }
    }
    tree
}

/// Names a module re-exports from its children (`pub use self::config::CaptureConfig;`), by
/// module: a sibling that imports `super::CaptureConfig` depends on `config`.
fn reexports(root: &Path, files: &[PathBuf]) -> BTreeMap<Vec<String>, BTreeMap<String, String>> {
    let mut out: BTreeMap<Vec<String>, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let me = module_of(root, f);
        let src = strip_comments(&std::fs::read_to_string(f).expect("source"));
        for stmt in src.split(';') {
            let Some(tree) = stmt.trim().strip_prefix("pub use self::") else { continue };
            for path in expand(tree) {
                let segs: Vec<&str> = path.split("::").collect();
                let (Some(child), Some(last)) = (segs.first(), segs.last()) else { continue };
                let name = last.rsplit(" as ").next().unwrap_or(last).trim();
                if segs.len() > 1 && *last != "*" {
                    out.entry(me.clone()).or_default().insert(name.to_string(), child.to_string());
                }
            }
        }
    }
    out
}

/// Edges between sibling modules, by parent, of one crate.
fn sibling_edges(root: &Path, skip: &[&str]) -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(root, skip, &mut files);
    let tree = module_tree(root, &files);
    let reexported = reexports(root, &files);
    let mut by_parent: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let me = module_of(root, f);
        let src = std::fs::read_to_string(f).expect("source");
        for target in references(&src, &me) {
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            let (Some(from), Some(to)) = (me.get(common), target.get(common)) else { continue };
            let parent = me[..common].to_vec();
            let to = match reexported.get(&parent).and_then(|r| r.get(to)) {
                Some(child) => child,
                None => to,
            };
            if to != from && tree.get(&parent).is_some_and(|children| children.contains(to)) {
                by_parent.entry(parent).or_default().entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    by_parent
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let mut found = Vec::new();
    let mut checked = 0;
    for (name, root, skip) in crates() {
        for (parent, edges) in sibling_edges(&root, &skip) {
            checked += edges.values().map(BTreeSet::len).sum::<usize>();
            for circle in circles(&edges) {
                let at = if parent.is_empty() { "top level".to_string() } else { parent.join("::") };
                let arrows: Vec<String> = circle
                    .iter()
                    .flat_map(|a| edges[a].iter().filter(|b| circle.contains(b)).map(move |b| format!("{a} → {b}")))
                    .collect();
                found.push(format!("{name}, {at}: {{{}}} ({})", circle.join(", "), arrows.join(", ")));
            }
        }
    }
    // The check sees the edges it should: an empty graph would pass anything.
    assert!(checked > 100, "only {checked} module edges found: the scan is broken");
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_check_finds_circles() {
    // A fake crate: `a` uses `b` (grouped import), `b` uses `a` (inline path), `c` only uses.
    let dir = std::env::temp_dir().join(format!("ot-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a; mod b; mod c; mod d;\npub use self::d::{D as Dee, inner::E};").unwrap();
    std::fs::write(dir.join("d.rs"), "use crate::Dee; use super::c;").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod inner;\nuse crate::{b::{X, Y}, c};").unwrap();
    std::fs::write(dir.join("a/inner.rs"), "use super::super::c::Z; // crate::b in a comment").unwrap();
    std::fs::write(dir.join("b.rs"), "fn f() { crate::a::g() }").unwrap();
    std::fs::write(dir.join("c.rs"), "use self::x; use crate::Dee;").unwrap();
    let edges = sibling_edges(&dir, &[]);
    let _ = std::fs::remove_dir_all(&dir);
    let top = &edges[&Vec::new()];
    assert_eq!(top["a"], BTreeSet::from(["b".to_string(), "c".to_string()]));
    assert_eq!(top["b"], BTreeSet::from(["a".to_string()]));
    // Through the crate root's re-export `Dee` (d's `D`): c → d, and d → c directly.
    assert_eq!(top["c"], BTreeSet::from(["d".to_string()]));
    assert_eq!(top["d"], BTreeSet::from(["c".to_string()]));
    let mut found = circles(top);
    found.sort();
    assert_eq!(found, vec![vec!["a".to_string(), "b".to_string()], vec!["c".to_string(), "d".to_string()]]);
}

#[test]
fn the_core_crate_depends_on_no_io_runtime_exporter_or_cli_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(["tree", "--offline", "-e", "normal", "-p", "tracer-core", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains("tracer-core") && crates.contains("httparse"), "unexpected cargo tree output: {tree}");
    let forbidden = [
        "aya",
        "pcap",
        "tokio",
        "kube",
        "tonic",
        "reqwest",
        "hyper",
        "ratatui",
        "crossterm",
        "clap",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry-otlp",
        "opentelemetry-proto",
    ];
    let found: Vec<&&str> = forbidden.iter().filter(|c| crates.contains(**c)).collect();
    assert!(found.is_empty(), "tracer-core depends on {found:?}:\n{tree}");
}

#[test]
fn nothing_run_by_the_tests_reads_outside_the_repository() {
    let out = Command::new("git").current_dir(repo()).args(["ls-files", "-co", "--exclude-standard"]).output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        // A source tree without git (an exported copy): the copy test in `cargo xtask test`
        // proves the same by running without `../shared`.
        testkit::privileged::skipped("nothing_run_by_the_tests_reads_outside_the_repository", "not a git checkout");
        return;
    };
    let mut offenders = Vec::new();
    for path in String::from_utf8_lossy(&out.stdout).lines() {
        let code = [".rs", ".sh", ".py", ".toml", ".mjs", ".js"].iter().any(|e| path.ends_with(e));
        if !code || path.ends_with("architecture.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(repo().join(path)) else { continue };
        // Code, not what comments say about it.
        let text = if path.ends_with(".rs") { strip_comments(&text) } else { text };
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.contains("../shared") || line.contains("shared/fixtures") || line.contains("OLLAMA_TRACER_SHARED") {
                offenders.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "files that reach outside the repository:\n{}", offenders.join("\n"));
}

/// Lines of a source file before its unit tests (`#[cfg(test)] mod tests`).
fn code_lines(src: &str) -> usize {
    let lines: Vec<&str> = src.lines().collect();
    lines
        .windows(2)
        .position(|w| w[0].starts_with("#[cfg(test)]") && w[1].starts_with("mod tests"))
        .unwrap_or(lines.len())
}

#[test]
fn no_module_of_the_product_is_over_600_lines() {
    // The product's crates; the test kit's generators (wire framing, synthetic captures, the
    // stand-in) are test tooling and stay whole where splitting would scatter one model.
    let r = repo();
    let mut long = Vec::new();
    for dir in ["tracer-common/src", "tracer-core/src", "tracer-user/src", "tracer-ebpf/src", "xtask/src"] {
        let mut files = Vec::new();
        rust_files(&r.join(dir), &[], &mut files);
        for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
            let n = code_lines(&std::fs::read_to_string(f).expect("source"));
            if n > 600 {
                long.push(format!("{}: {n} lines", f.strip_prefix(&r).unwrap_or(f).display()));
            }
        }
    }
    assert!(long.is_empty(), "split these along a seam (docs/architecture.md):\n{}", long.join("\n"));
}
