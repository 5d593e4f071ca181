//! `ollama-call ADDR PATH [BODY] [--repeat N] [--hold-ms MS]`: a minimal Ollama client for
//! privileged tests. Sends `GET PATH` (or `POST PATH` with BODY) over one keep-alive
//! connection N times, reads each whole response, prints its status line, and exits 0 if all
//! were 2xx. `--hold-ms` keeps the connection (and the process) alive that long afterwards.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut positional, mut repeat, mut hold_ms) = (Vec::new(), 1u32, 0u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().and_then(|v| v.parse().ok()).ok_or("--repeat N")?,
            "--hold-ms" => hold_ms = args.next().and_then(|v| v.parse().ok()).ok_or("--hold-ms MS")?,
            _ => positional.push(a),
        }
    }
    let [addr, path, rest @ ..] = positional.as_slice() else {
        return Err("usage: ollama-call ADDR PATH [BODY] [--repeat N] [--hold-ms MS]".into());
    };
    let body = rest.first();
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    for _ in 0..repeat {
        let req = match body {
            Some(b) => format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ollama-call/1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ),
            None => format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ollama-call/1\r\n\r\n"),
        };
        w.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
        let status = read_response(&mut r)?;
        println!("{status}");
        if !status.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2')) {
            return Err(format!("{path}: {status}"));
        }
    }
    std::thread::sleep(Duration::from_millis(hold_ms));
    Ok(())
}

/// Reads one response (Content-Length or chunked); returns its status line.
fn read_response(r: &mut impl BufRead) -> Result<String, String> {
    let line = |r: &mut dyn BufRead| -> Result<String, String> {
        let mut l = String::new();
        r.read_line(&mut l).map_err(|e| format!("read: {e}"))?;
        if l.is_empty() {
            return Err("connection closed".into());
        }
        Ok(l.trim_end().to_string())
    };
    let status = line(r)?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let h = line(r)?;
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    if chunked {
        loop {
            let size = usize::from_str_radix(line(r)?.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|e| format!("chunk size: {e}"))?;
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).map_err(|e| format!("chunk: {e}"))?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).map_err(|e| format!("body: {e}"))?;
    }
    Ok(status)
}
