//! Wall-clock formatting of capture timestamps (UTC, RFC 3339) without a calendar dependency.

use tracer_core::segment::Timestamp;

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds).
pub fn rfc3339_micros(ts: Timestamp) -> String {
    let secs = ts.0 / 1_000_000_000;
    let micros = (ts.0 % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_micros(Timestamp(0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(Timestamp(1_767_225_600_123_456_789)), "2026-01-01T00:00:00.123456Z");
        assert_eq!(rfc3339_micros(Timestamp(951_782_400_000_000_000)), "2000-02-29T00:00:00.000000Z");
    }
}
