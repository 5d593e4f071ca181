//! What every reader of the kernel programs' ring buffer shares: kernel time to wall-clock
//! time (the programs stamp records with `bpf_ktime_get_ns()`, CLOCK_MONOTONIC; segments carry
//! wall-clock times), addresses as the records carry them, and why a record is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{AF_INET, AF_INET6};
use tracer_core::segment::Timestamp;

/// Why a ring-buffer record was not decoded (counted, never fatal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its header")]
    Short,
    #[error("record data length beyond the record or the chunk size")]
    BadLength,
    #[error("unknown address family")]
    BadFamily,
    #[error("unknown event, direction or end")]
    BadEvent,
}

/// A record's address: IPv4 in the first 4 bytes, or IPv6, by the Linux family.
pub fn ip(family: u8, a: &[u8; 16]) -> Result<IpAddr, RecordError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*a))),
        _ => Err(RecordError::BadFamily),
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    pub realtime_minus_monotonic_ns: i64,
}

pub(crate) fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we pass; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl ClockOffset {
    /// Measures the offset: the tightest of a few MONOTONIC / REALTIME / MONOTONIC samples.
    pub fn measure() -> ClockOffset {
        let mut best = (i64::MAX, 0i64);
        for _ in 0..5 {
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m2 = clock_ns(libc::CLOCK_MONOTONIC);
            let width = m2 - m1;
            if width < best.0 {
                best = (width, r - (m1 + width / 2));
            }
        }
        ClockOffset { realtime_minus_monotonic_ns: best.1 }
    }

    /// Wall-clock time of a CLOCK_MONOTONIC instant.
    pub fn to_wall(self, monotonic_ns: u64) -> Timestamp {
        let wall = (monotonic_ns as i128) + self.realtime_minus_monotonic_ns as i128;
        Timestamp(wall.clamp(0, u64::MAX as i128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_tracks_realtime() {
        let c = ClockOffset::measure();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = c.to_wall(mono).0 as i128;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
        assert!((wall - now).abs() < 5_000_000, "offset off by {} ns", wall - now);
    }
}
