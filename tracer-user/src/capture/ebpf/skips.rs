//! Bodies the kernel programs report by length only: the pipeline finds a body it only
//! counts ([`BodySkip`]), and this writes its sequence range into the programs' skip map
//! (`tracer_common::map::SKIP`). From then on the body's packets come as header-only records
//! (`rec_flags::SKIPPED`); the entry goes when a packet past the range (or a FIN/RST) passes,
//! or when the LRU map needs room. Bytes already in the ring when the entry lands are simply
//! read: the skip starts at whatever packet comes next.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{HashMap, Map, MapData};
use tracer_common::{AF_INET, AF_INET6, SkipKey, SkipRange, map};
use tracer_core::pipeline::BodySkip;
use tracer_core::segment::Direction;

use crate::capture::config::{CaptureError, chain};

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
        let range = SkipRange { from: skip.from, to: skip.to };
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
    use tracer_core::segment::FlowKey;

    #[test]
    fn keys_name_the_sender_first_as_packets_do() {
        let flow = FlowKey { client: "10.0.0.1:40000".parse().unwrap(), server: "10.0.0.2:11434".parse().unwrap() };
        let k = key(&BodySkip { flow, dir: Direction::ToClient, from: 1, to: 2 });
        assert_eq!((k.sport, k.dport, k.family), (11434, 40000, AF_INET));
        assert_eq!(&k.saddr[..5], &[10, 0, 0, 2, 0]);
        let flow = FlowKey { client: "[::1]:40000".parse().unwrap(), server: "[::1]:11434".parse().unwrap() };
        let k = key(&BodySkip { flow, dir: Direction::ToServer, from: 1, to: 2 });
        assert_eq!((k.sport, k.family, k.daddr[15]), (40000, AF_INET6, 1));
    }
}
