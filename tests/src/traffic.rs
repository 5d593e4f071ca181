//! Traffic for the cost and memory benchmarks (`bench-traffic`, driven by `cargo xtask bench`):
//!
//! - [`bulk`]: one large HTTP response over loopback (a model-sized download), client-measured
//!   throughput;
//! - [`latency`]: many small calls one after the other on a keep-alive connection,
//!   client-measured round trips;
//! - [`upload`]: one large blob upload to the stand-in (an `ollama create`), throughput;
//! - [`idle`]: many keep-alive connections that each make one small call, then stay open and
//!   silent.
//!
//! The servers of `bulk` and `latency` are minimal blocking HTTP/1.1 servers in this process
//! (one thread), so what a run measures is the loopback path and whatever a tracer adds to it,
//! not a server's own work.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Body of each small response: an `/api/version` answer.
const SMALL_BODY: &[u8] = br#"{"version":"0.12.6"}"#;

/// Reads one request head (and its `Content-Length` body) from `r`; `Ok(None)` at EOF.
fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut body_len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            body_len = v.trim().parse().map_err(|_| std::io::Error::other("bad content-length"))?;
        }
    }
    std::io::copy(&mut r.take(body_len as u64), &mut std::io::sink())?;
    Ok(Some(first))
}

/// Serves one client: `GET /bulk/N` (N body bytes) and anything else with [`SMALL_BODY`],
/// keep-alive, until it closes the connection.
fn serve(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let block = vec![b'x'; 1 << 20];
        let Ok((conn, _)) = listener.accept() else { return };
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(conn.try_clone().expect("clone socket"));
        let mut w = conn;
        while let Ok(Some(line)) = read_request(&mut reader) {
            let bulk = line.split_whitespace().nth(1).and_then(|p| p.strip_prefix("/bulk/"));
            let ok = match bulk.and_then(|n| n.parse::<u64>().ok()) {
                Some(mut n) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
                    );
                    let mut ok = w.write_all(head.as_bytes()).is_ok();
                    while ok && n > 0 {
                        let k = n.min(block.len() as u64) as usize;
                        ok = w.write_all(&block[..k]).is_ok();
                        n -= k as u64;
                    }
                    ok
                }
                None => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                        SMALL_BODY.len()
                    );
                    let mut out = head.into_bytes();
                    out.extend_from_slice(SMALL_BODY);
                    w.write_all(&out).is_ok()
                }
            };
            if !ok {
                break;
            }
        }
    })
}

/// Reads one response with a `Content-Length` body from `r`, discarding the body; returns
/// the body length.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<u64> {
    let mut len = None;
    let mut status = String::new();
    if r.read_line(&mut status)? == 0 {
        return Err(std::io::Error::other("connection closed before the response"));
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("unexpected status line {status:?}")));
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed in the response head"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<u64>().ok();
        }
    }
    let len = len.ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
    let got = std::io::copy(&mut r.take(len), &mut std::io::sink())?;
    if got != len {
        return Err(std::io::Error::other(format!("body cut short: {got} of {len} bytes")));
    }
    Ok(len)
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A [`serve`] thread on 127.0.0.1:`port` and a client connection to it: (server, address,
/// writer, reader with `read_buf` bytes of buffer).
type Client = (std::thread::JoinHandle<()>, SocketAddr, TcpStream, BufReader<TcpStream>);

fn client_of_own_server(port: u16, read_buf: usize) -> std::io::Result<Client> {
    let listener = bind(port)?;
    let addr = listener.local_addr()?;
    let server = serve(listener);
    let conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let w = conn.try_clone()?;
    Ok((server, addr, w, BufReader::with_capacity(read_buf, conn)))
}

#[derive(Clone, Debug, Serialize)]
pub struct BulkResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
}

/// Downloads `bytes` in one response from a server on 127.0.0.1:`port` (0: a free port).
pub fn bulk(port: u16, bytes: u64) -> std::io::Result<BulkResult> {
    let (server, addr, mut w, mut r) = client_of_own_server(port, 1 << 20)?;
    let t = Instant::now();
    w.write_all(format!("GET /bulk/{bytes} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-traffic\r\n\r\n").as_bytes())?;
    let got = read_response(&mut r)?;
    let secs = t.elapsed().as_secs_f64();
    drop((w, r));
    let _ = server.join();
    Ok(BulkResult { bytes: got, secs, mb_per_s: got as f64 / secs / 1e6 })
}

#[derive(Clone, Debug, Serialize)]
pub struct UploadResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// The server's status line, e.g. `HTTP/1.1 201 Created`.
    pub status: String,
    pub client_port: u16,
}

/// Uploads a `bytes`-long blob (`POST /api/blobs/sha256:…` with `Content-Length`, as `ollama
/// create` does) to an Ollama-like server at `addr` (the stand-in), then reads its answer;
/// client-measured throughput, from the first byte written to the answer's head.
pub fn upload(addr: SocketAddr, bytes: u64) -> std::io::Result<UploadResult> {
    let mut w = TcpStream::connect(addr)?;
    let client_port = w.local_addr()?.port();
    let mut r = BufReader::new(w.try_clone()?);
    let digest = format!("sha256:{:064x}", bytes);
    let t = Instant::now();
    w.write_all(
        format!("POST /api/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-traffic\r\nContent-Length: {bytes}\r\n\r\n")
            .as_bytes(),
    )?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let mut status = String::new();
    r.read_line(&mut status)?;
    let secs = t.elapsed().as_secs_f64();
    // The rest of the head (the answer has no body).
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 && line != "\r\n" {
        line.clear();
    }
    Ok(UploadResult {
        bytes,
        secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        status: status.trim_end().to_owned(),
        client_port,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    pub calls: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

/// `calls` small calls (`POST /api/show`-sized request, `/api/version`-sized answer) one after
/// the other on one keep-alive connection to a server on 127.0.0.1:`port` (0: a free port);
/// each call timed from its write to its last byte. The first 1 % warm up and are not counted.
pub fn latency(port: u16, calls: usize) -> std::io::Result<LatencyResult> {
    let (server, addr, mut w, mut r) = client_of_own_server(port, 8 << 10)?;
    let body = br#"{"model":"llama3.2"}"#;
    let mut req = format!(
        "POST /api/show HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-traffic\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let warmup = calls / 100;
    let mut us = Vec::with_capacity(calls);
    for i in 0..warmup + calls {
        let t = Instant::now();
        w.write_all(&req)?;
        read_response(&mut r)?;
        if i >= warmup {
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop((w, r));
    let _ = server.join();
    Ok(latency_summary(us))
}

fn latency_summary(mut us: Vec<f64>) -> LatencyResult {
    us.sort_by(f64::total_cmp);
    let pct = |p: f64| if us.is_empty() { 0.0 } else { us[((us.len() - 1) as f64 * p).round() as usize] };
    LatencyResult {
        calls: us.len(),
        p50_us: pct(0.5),
        p90_us: pct(0.9),
        p99_us: pct(0.99),
        mean_us: us.iter().sum::<f64>() / us.len().max(1) as f64,
    }
}

/// Open idle connections: each made one call; they stay open until dropped.
pub struct IdleConnections {
    pub conns: Vec<TcpStream>,
}

/// Opens `n` keep-alive connections to `addr`, each making one `GET /api/version`, and keeps
/// them open (silent) until the result is dropped. Opens them `batch` at a time: connect all,
/// then send all, then read all, so a slow server is not waited on one call at a time.
pub fn idle(addr: SocketAddr, n: usize, batch: usize) -> std::io::Result<IdleConnections> {
    let mut conns = Vec::with_capacity(n);
    let req = format!("GET /api/version HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-traffic\r\n\r\n");
    while conns.len() < n {
        let k = batch.max(1).min(n - conns.len());
        let mut group = Vec::with_capacity(k);
        for _ in 0..k {
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            c.set_read_timeout(Some(Duration::from_secs(30)))?;
            group.push(c);
        }
        for c in &mut group {
            c.write_all(req.as_bytes())?;
        }
        for c in group {
            let mut r = BufReader::new(c);
            read_response(&mut r)?;
            // Nothing may be left buffered: the next bytes would belong to no call.
            if !r.buffer().is_empty() {
                return Err(std::io::Error::other("bytes after the response"));
            }
            conns.push(r.into_inner());
        }
    }
    Ok(IdleConnections { conns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_transfers_every_byte() {
        let r = bulk(0, 3_000_001).unwrap();
        assert_eq!(r.bytes, 3_000_001);
        assert!(r.secs > 0.0 && r.mb_per_s > 0.0);
    }

    #[test]
    fn latency_counts_calls_after_warmup() {
        let r = latency(0, 200).unwrap();
        assert_eq!(r.calls, 200);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p90_us && r.p90_us <= r.p99_us, "{r:?}");
    }

    #[test]
    fn latency_percentiles() {
        let r = latency_summary((1..=100).map(f64::from).collect());
        assert_eq!((r.p50_us, r.p90_us, r.p99_us, r.mean_us), (51.0, 90.0, 99.0, 50.5));
    }

    #[test]
    fn idle_connections_each_made_a_call() {
        let listener = bind(0).unwrap();
        let addr = listener.local_addr().unwrap();
        // A server of its own per connection: `serve` takes one client at a time.
        let server = std::thread::spawn(move || {
            let mut handled = 0;
            let mut held = Vec::new();
            for conn in listener.incoming().take(5) {
                let conn = conn.unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let line = read_request(&mut r).unwrap().unwrap();
                assert!(line.starts_with("GET /api/version "), "{line:?}");
                let mut w = conn;
                w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", SMALL_BODY.len()).as_bytes())
                    .unwrap();
                w.write_all(SMALL_BODY).unwrap();
                held.push(w);
                handled += 1;
            }
            handled
        });
        let idle = idle(addr, 5, 2).unwrap();
        assert_eq!(idle.conns.len(), 5);
        assert_eq!(server.join().unwrap(), 5);
    }
}
