//! What TLS stack an executable or library holds, and where to probe it: file offsets of the
//! OpenSSL/BoringSSL functions (`.dynsym`, else `.symtab`), or of Go's `crypto/tls.(*Conn)`
//! methods and the return instructions of `Read` (decoded with iced-x86: a uprobe at each
//! `RET` replaces the uretprobe Go stacks cannot have). What cannot be probed is said, not
//! guessed: a Go binary without its symbol table, OpenSSL linked in without symbols, rustls.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use memchr::memmem;
use object::{Architecture, Object, ObjectSection, ObjectSymbol};

/// OpenSSL/BoringSSL functions the probes attach to.
pub const SSL_FUNCTIONS: [&str; 9] = [
    "SSL_write",
    "SSL_write_ex",
    "SSL_read",
    "SSL_read_ex",
    "SSL_set_fd",
    "SSL_set_rfd",
    "SSL_set_wfd",
    "SSL_ctrl",
    "SSL_free",
];
const GO_WRITE: &str = "crypto/tls.(*Conn).Write";
const GO_READ: &str = "crypto/tls.(*Conn).Read";
const GO_CLOSE: &str = "crypto/tls.(*Conn).Close";
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Where to probe an OpenSSL-compatible library: file offsets by function name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslProbes {
    pub boringssl: bool,
    pub version: Option<String>,
    pub offsets: HashMap<&'static str, u64>,
}

/// Where to probe Go's `crypto/tls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoProbes {
    pub version: String,
    pub write: u64,
    pub read: u64,
    /// Each `RET` of `(*Conn).Read`.
    pub read_returns: Vec<u64>,
    pub close: Option<u64>,
}

/// The TLS stack of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsStack {
    /// No TLS library found.
    None,
    OpenSsl(SslProbes),
    Go(GoProbes),
    /// A TLS stack that cannot be probed, and why.
    NotProbed(String),
}

impl fmt::Display for TlsStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsStack::None => f.write_str("no TLS library"),
            TlsStack::OpenSsl(p) => {
                f.write_str(if p.boringssl { "BoringSSL" } else { "OpenSSL" })?;
                if let Some(v) = &p.version {
                    write!(f, " {v}")?;
                }
                Ok(())
            }
            TlsStack::Go(g) => write!(f, "Go {} crypto/tls ({} return points)", g.version, g.read_returns.len()),
            TlsStack::NotProbed(why) => f.write_str(why),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("ELF: {0}")]
    Elf(#[from] object::Error),
}

/// Looks at the file at `path` (an executable or a shared library). `name` is the file name
/// the process knows it by (a library's soname gives its version).
pub fn inspect(path: &Path, name: &str) -> Result<TlsStack, InspectError> {
    let file = std::fs::File::open(path)?;
    // SAFETY: read-only private mapping; a file changed under us gives wrong offsets at worst,
    // which the kernel refuses or which probe nothing.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    inspect_bytes(&map, name)
}

/// [`inspect`] on the file's bytes.
pub fn inspect_bytes(data: &[u8], name: &str) -> Result<TlsStack, InspectError> {
    if !data.starts_with(b"\x7fELF") {
        return Ok(TlsStack::None);
    }
    let elf = object::File::parse(data)?;
    let mut found: HashMap<String, (u64, u64, Option<object::SectionIndex>)> = HashMap::new();
    let mut boringssl = false;
    let mut rustls = false;
    let want = |n: &str| SSL_FUNCTIONS.contains(&n) || matches!(n, GO_WRITE | GO_READ | GO_CLOSE);
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        let Ok(n) = sym.name() else { continue };
        if n.starts_with("BORINGSSL_") {
            boringssl = true;
        }
        if !rustls && n.contains("rustls") {
            rustls = true;
        }
        if sym.is_definition() && want(n) && !found.contains_key(n) {
            found.insert(n.to_owned(), (sym.address(), sym.size(), sym.section_index()));
        }
    }
    let offset_of = |n: &str| -> Option<u64> {
        let (addr, _, idx) = *found.get(n)?;
        file_offset(&elf, addr, idx)
    };
    if found.contains_key("SSL_write") && found.contains_key("SSL_read") {
        let offsets: HashMap<&'static str, u64> =
            SSL_FUNCTIONS.iter().filter_map(|f| offset_of(f).map(|o| (*f, o))).collect();
        return Ok(TlsStack::OpenSsl(SslProbes { boringssl, version: ssl_version(data, name), offsets }));
    }
    if let Some(version) = go_version(&elf) {
        return Ok(go_stack(&elf, data, &found, version));
    }
    if rustls {
        return Ok(TlsStack::NotProbed("rustls (not probed)".to_owned()));
    }
    let has = |needle: &[u8]| memmem::find(data, needle).is_some();
    if (has(b"OpenSSL 1.") || has(b"OpenSSL 3.")) && (has(b"SSL_write") || has(b"ssl3_write_bytes")) {
        return Ok(TlsStack::NotProbed("OpenSSL linked in without symbols (stripped): not seen".to_owned()));
    }
    Ok(TlsStack::None)
}

/// A Go binary: its `crypto/tls` entry points and `Read`'s return instructions.
fn go_stack(
    elf: &object::File<'_>,
    data: &[u8],
    found: &HashMap<String, (u64, u64, Option<object::SectionIndex>)>,
    version: String,
) -> TlsStack {
    let uses_tls = memmem::find(data, b"crypto/tls").is_some();
    let (Some(&(w_addr, _, w_idx)), Some(&(r_addr, r_size, r_idx))) = (found.get(GO_WRITE), found.get(GO_READ)) else {
        return if uses_tls {
            TlsStack::NotProbed(format!("Go {version} binary without symbols (stripped): not seen"))
        } else {
            TlsStack::None
        };
    };
    if elf.architecture() != Architecture::X86_64 {
        return TlsStack::NotProbed(format!("Go {version} on {:?}: only x86-64 is probed", elf.architecture()));
    }
    if !go_register_abi(&version) {
        return TlsStack::NotProbed(format!("Go {version}: older than 1.17 (no register ABI): not probed"));
    }
    let (Some(write), Some(read)) = (file_offset(elf, w_addr, w_idx), file_offset(elf, r_addr, r_idx)) else {
        return TlsStack::NotProbed(format!("Go {version}: crypto/tls outside the file's sections"));
    };
    let body = data.get(read as usize..(read + r_size) as usize).unwrap_or_default();
    let read_returns = return_offsets(body, r_addr).into_iter().map(|o| read + o).collect::<Vec<_>>();
    if read_returns.is_empty() {
        return TlsStack::NotProbed(format!("Go {version}: no return instruction found in {GO_READ}"));
    }
    let close = found.get(GO_CLOSE).and_then(|&(a, _, i)| file_offset(elf, a, i));
    TlsStack::Go(GoProbes { version, write, read, read_returns, close })
}

/// Offsets (from the start of `code`, loaded at `ip`) of its x86-64 `RET` instructions.
pub fn return_offsets(code: &[u8], ip: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    for instr in &mut decoder {
        if matches!(instr.mnemonic(), Mnemonic::Ret) {
            out.push(instr.ip() - ip);
        }
    }
    out
}

/// The file offset of virtual address `addr` in section `idx`.
fn file_offset(elf: &object::File<'_>, addr: u64, idx: Option<object::SectionIndex>) -> Option<u64> {
    let section = elf.section_by_index(idx?).ok()?;
    let (offset, _) = section.file_range()?;
    addr.checked_sub(section.address()).map(|d| offset + d)
}

/// The Go version from `.go.buildinfo` (Go 1.18 and later keep it inline there).
fn go_version(elf: &object::File<'_>) -> Option<String> {
    let info = elf.section_by_name(".go.buildinfo")?.data().ok()?;
    if !info.starts_with(GO_BUILDINFO_MAGIC) || info.len() < 32 {
        return None;
    }
    if info[15] & 0x2 == 0 {
        // Pointer-based header: Go 1.17 or older.
        return Some("≤1.17".to_owned());
    }
    let (len, n) = uvarint(&info[32..])?;
    let start = 32 + n;
    let v = info.get(start..start + len as usize)?;
    Some(String::from_utf8_lossy(v).trim_start_matches("go").to_owned())
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Go 1.17 introduced the register-based internal ABI on amd64, which the probes read.
fn go_register_abi(version: &str) -> bool {
    if version.starts_with('≤') {
        return false;
    }
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else { return false };
    matches!((major.parse::<u32>(), minor.parse::<u32>()), (Ok(m), Ok(n)) if m > 1 || (m == 1 && n >= 17))
}

/// A library's version: `OpenSSL 3.0.x` text when linked in, else its soname's (`libssl.so.3`).
fn ssl_version(data: &[u8], name: &str) -> Option<String> {
    for needle in [&b"OpenSSL 3."[..], b"OpenSSL 1.1."] {
        if let Some(at) = memmem::find(data, needle) {
            let rest = &data[at + 8..data.len().min(at + 40)];
            let end = rest.iter().position(|&c| c == b' ' || c == 0).unwrap_or(rest.len());
            return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    let (_, v) = base.split_once(".so.")?;
    (!v.is_empty()).then(|| format!("{v} ({base})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_return_of_a_function() {
        // mov rax, 1; cmp rax, rbx; jne +1; ret; xor eax, eax; ret — and a 0xc3 byte inside an
        // immediate that is no RET.
        let code = [
            0x48, 0xc7, 0xc0, 0x01, 0x00, 0x00, 0x00, // mov rax, 1
            0x48, 0x39, 0xd8, // cmp rax, rbx
            0x75, 0x01, // jne +1
            0xc3, // ret (offset 12)
            0xb8, 0xc3, 0x00, 0x00, 0x00, // mov eax, 0xc3
            0x31, 0xc0, // xor eax, eax
            0xc3, // ret (offset 20)
        ];
        assert_eq!(return_offsets(&code, 0x401000), vec![12, 20]);
    }

    #[test]
    fn go_versions_and_abi() {
        assert!(go_register_abi("1.19.8"));
        assert!(go_register_abi("1.17"));
        assert!(!go_register_abi("1.16.5"));
        assert!(!go_register_abi("≤1.17"), "a pointer-based build info: too old to tell");
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
    }

    #[test]
    fn not_elf_is_nothing() {
        assert_eq!(inspect_bytes(b"#!/bin/sh\n", "x").unwrap(), TlsStack::None);
    }

    /// The system's libssl, where there is one: both functions found, at distinct offsets.
    #[test]
    fn the_system_libssl_is_probed() {
        let Some(lib) = ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            eprintln!("*** no system libssl.so.3: not checked ***");
            return;
        };
        let TlsStack::OpenSsl(p) = inspect(lib, "libssl.so.3").unwrap() else { panic!("{lib:?}: not OpenSSL") };
        assert!(!p.boringssl);
        let (w, r) = (p.offsets["SSL_write"], p.offsets["SSL_read"]);
        assert!(w > 0 && r > 0 && w != r, "{p:?}");
        assert!(p.offsets.contains_key("SSL_read_ex") && p.offsets.contains_key("SSL_set_fd"));
    }
}
