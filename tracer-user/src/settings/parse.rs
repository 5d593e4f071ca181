//! The value syntaxes of the OpenTelemetry variables and our flags: milliseconds, URLs,
//! listen addresses, `k=v,…` lists with percent-encoding.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::env::Environment;

/// First of `vars` that is set, as whole milliseconds.
pub(super) fn millis(env: &Environment, vars: &[&str], warnings: &mut Vec<String>) -> Option<Duration> {
    for var in vars {
        if let Some(v) = env.get(var) {
            match v.parse::<u64>() {
                Ok(ms) => return Some(Duration::from_millis(ms)),
                Err(_) => warnings.push(format!("{var}: `{v}` is not a whole number of milliseconds (ignored)")),
            }
        }
    }
    None
}

/// `host:port` without a scheme is taken as plain `http://`.
pub(super) fn with_scheme(url: &str) -> String {
    if url.contains("://") { url.to_string() } else { format!("http://{url}") }
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = with_scheme(url).parse().map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}`: the scheme must be http or https")),
    }
    if uri.authority().is_none() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

pub(super) fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() }
}

/// `PORT`, `HOST:PORT` or `[V6]:PORT`; a bare port listens on 127.0.0.1 (never on every
/// interface unless asked: the metrics describe the host's traffic).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("`{s}` is not PORT or HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port"))?;
    if host == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` has no address"))
}

/// `k1=v1,k2=v2` with percent-encoded values (W3C Baggage octets), as `OTEL_RESOURCE_ATTRIBUTES`
/// and `OTEL_EXPORTER_OTLP_HEADERS` are written.
pub fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("`{item}` is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| format!("`{item}`: invalid percent-encoding"))?;
        out.push((percent_decode(k).ok_or_else(|| format!("`{item}`: invalid percent-encoding"))?, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
