//! Bodies the kernel programs report by length only: the pipeline finds a body it only
//! counts ([`BodySkip`]), and this writes its sequence range into the programs' skip map
//! (`tracer_common::map::SKIP`). From then on the body's packets come as header-only records
//! (`rec_flags::SKIPPED`); the range moves on through a body longer than one range
//! (`BodySkip::more`), and the entry goes when a packet past the body (or a FIN/RST) passes, or
//! when the LRU map needs room. Bytes already in the ring when the entry lands are simply read:
//! the skip starts at whatever packet comes next. Blob uploads are named by the kernel itself
//! from their heads (`tracer_common::blob_head`), before this can; the same range written again
//! here changes nothing.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{HashMap, Map, MapData};
use tracer_common::{AF_INET, AF_INET6, SkipKey, SkipRange, map};
use tracer_core::pipeline::BodySkip;
use tracer_core::segment::Direction;

use crate::capture::config::{CaptureError, chain};

// The kernel names blob uploads' ranges itself, capped as the pipeline caps its own.
const _: () = assert!(tracer_common::MAX_SKIP_BYTES as u64 == tracer_core::pipeline::MAX_SKIP_BYTES);

/// The skip map, shared by the capture and the pipeline thread (which finds the bodies).
pub struct BodySkipper {
    map: Mutex<HashMap<MapData, SkipKey, SkipRange>>,
    /// Skips written, and refused by the kernel (the map update failed).
    pub set: AtomicU64,
    pub failed: AtomicU64,
}

impl BodySkipper {
    pub fn new(map: Map) -> Result<BodySkipper, CaptureError> {
        let map = HashMap::try_from(map).map_err(|e| CaptureError::Map { map: map::SKIP, detail: chain(&e) })?;
        Ok(BodySkipper { map: Mutex::new(map), set: AtomicU64::new(0), failed: AtomicU64::new(0) })
    }

    /// Asks the kernel not to copy the bytes of `skip`.
    pub fn skip(&self, skip: &BodySkip) {
        let key = key(skip);
        let range = SkipRange { from: skip.from, to: skip.to, more: skip.more };
        let done = self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(key, range, 0);
        match done {
            Ok(()) => self.set.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The map key of the direction `skip` names, as its packets carry it (sender first).
pub fn key(skip: &BodySkip) -> SkipKey {
    let (src, dst) = match skip.dir {
        Direction::ToServer => (skip.flow.client, skip.flow.server),
        Direction::ToClient => (skip.flow.server, skip.flow.client),
    };
    let mut k =
        SkipKey { saddr: [0; 16], daddr: [0; 16], sport: src.port(), dport: dst.port(), family: 0, _pad: [0; 3] };
    for (ip, out) in [(src.ip(), &mut k.saddr), (dst.ip(), &mut k.daddr)] {
        match ip {
            IpAddr::V4(v4) => {
                out[..4].copy_from_slice(&v4.octets());
                k.family = AF_INET;
            }
            IpAddr::V6(v6) => {
                *out = v6.octets();
                k.family = AF_INET6;
            }
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tracer_common::blob_head::{HEAD_SCAN, blob_head};
    use tracer_core::segment::FlowKey;

    /// What the kernel reads from a packet starting with `bytes`.
    fn kernel(bytes: &[u8]) -> Option<(u32, u64)> {
        let mut buf = [0u8; HEAD_SCAN];
        let n = bytes.len().min(HEAD_SCAN);
        buf[..n].copy_from_slice(&bytes[..n]);
        blob_head(&buf, n as u32, &mut Default::default())
    }

    /// What a real HTTP parser reads: the head's length and its one Content-Length, when the
    /// head is complete and names no transfer or content coding.
    fn httparse_head(bytes: &[u8]) -> Option<(u32, u64)> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = req.parse(bytes).ok()? else { return None };
        let mut cl = None;
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            if name == "transfer-encoding" || name == "content-encoding" {
                return None;
            }
            if name == "content-length" {
                if cl.is_some() {
                    return None;
                }
                let v = std::str::from_utf8(h.value).ok()?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                cl = Some(v.parse::<u64>().ok()?);
            }
        }
        Some((len as u32, cl?))
    }

    const DIGEST: &str = "sha256:8934d96d3f08982e95922b2b7a2c626a1fe873d7c3b06e8e56d8bc0a1fef6d45";

    #[test]
    fn blob_heads_of_real_clients_are_read() {
        let go = format!(
            "POST /api/blobs/{DIGEST} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nUser-Agent: ollama/0.13.0 (amd64 linux) \
             Go/go1.24.0\r\nContent-Length: 4683073184\r\nAccept: application/json\r\nContent-Type: \
             application/octet-stream\r\nAccept-Encoding: gzip\r\n\r\nGGUF"
        );
        let py = format!(
            "POST /api/blobs/{DIGEST} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nAccept: */*\r\nAccept-Encoding: gzip, \
             deflate\r\nConnection: keep-alive\r\nUser-Agent: ollama-python/0.6.1\r\ncontent-length: 1073741824\r\n\r\n"
        );
        for (head, len) in [(go.as_bytes(), 4_683_073_184u64), (py.as_bytes(), 1 << 30)] {
            let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() as u32 + 4;
            assert_eq!(kernel(head), Some((end, len)), "{}", String::from_utf8_lossy(head));
            assert_eq!(kernel(head), httparse_head(head));
        }
    }

    #[test]
    fn heads_it_must_leave_to_user_space() {
        let base = |headers: &str| format!("POST /api/blobs/{DIGEST} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        for h in [
            "Transfer-Encoding: chunked\r\nContent-Length: 100000\r\n",
            "Content-Length: 100000\r\nContent-Encoding: gzip\r\n",
            "Content-Length: 100000\r\nContent-Length: 100000\r\n",
            "Content-Length: 1e5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 100000 \r\n",
            "Content-Length:\r\n",
            "X-Content-Length: 100000\r\n",
            "",
        ] {
            let head = base(h);
            assert_eq!(kernel(head.as_bytes()), None, "{head:?}");
        }
        // The head's end beyond the bytes scanned, or not in the packet at all.
        let long = base(&format!("Authorization: Bearer {}\r\nContent-Length: 100000\r\n", "x".repeat(HEAD_SCAN)));
        assert_eq!(kernel(long.as_bytes()), None);
        let cut = base("Content-Length: 100000\r\n");
        assert_eq!(kernel(&cut.as_bytes()[..cut.len() - 2]), None);
    }

    fn header_line() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("Content-Length".to_owned()),
            Just("content-LENGTH".to_owned()),
            Just("Transfer-Encoding".to_owned()),
            Just("Content-Encoding".to_owned()),
            Just("Content-Type".to_owned()),
            Just("X-Content-Lengths".to_owned()),
            "[A-Za-z-]{1,20}",
        ];
        let value = prop_oneof!["[0-9]{1,15}", " [0-9]{1,12}", "\t[0-9]{1,12}", "[0-9]{1,6}[ a-z]", "[ -~]{0,40}",];
        (name, value).prop_map(|(n, v)| format!("{n}:{v}\r\n"))
    }

    proptest! {
        /// Wherever the kernel reads a Content-Length and a head's end, a real parser reads the
        /// same: never a range the body does not have.
        #[test]
        fn the_scan_agrees_with_httparse(
            lines in proptest::collection::vec(header_line(), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..2048,
        ) {
            let mut bytes = format!("POST /api/blobs/{DIGEST} HTTP/1.1\r\n{}\r\n", lines.concat()).into_bytes();
            bytes.extend_from_slice(&body);
            let bytes = &bytes[..cut.min(bytes.len())];
            let got = kernel(bytes);
            if let Some(read) = got {
                prop_assert_eq!(Some(read), httparse_head(bytes));
            } else if let Some((end, _)) = httparse_head(bytes) {
                // Refused only where user space decides: a value with blanks around it (which
                // httparse trims), or a head past the bytes scanned.
                let head = String::from_utf8_lossy(&bytes[..end as usize]).to_ascii_lowercase();
                prop_assert!(
                    end as usize > HEAD_SCAN || head.contains("content-length: ") || head.contains("content-length:\t")
                        || head.contains(" \r\n") || head.contains("\t\r\n"),
                    "refused {head:?}"
                );
            }
        }
    }

    #[test]
    fn keys_name_the_sender_first_as_packets_do() {
        let flow = FlowKey { client: "10.0.0.1:40000".parse().unwrap(), server: "10.0.0.2:11434".parse().unwrap() };
        let k = key(&BodySkip { flow, dir: Direction::ToClient, from: 1, to: 2, more: 0 });
        assert_eq!((k.sport, k.dport, k.family), (11434, 40000, AF_INET));
        assert_eq!(&k.saddr[..5], &[10, 0, 0, 2, 0]);
        let flow = FlowKey { client: "[::1]:40000".parse().unwrap(), server: "[::1]:11434".parse().unwrap() };
        let k = key(&BodySkip { flow, dir: Direction::ToServer, from: 1, to: 2, more: 0 });
        assert_eq!((k.sport, k.family, k.daddr[15]), (40000, AF_INET6, 1));
    }
}
