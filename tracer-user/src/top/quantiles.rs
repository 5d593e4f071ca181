//! Quantiles of a stream of positive values in bounded memory: exact while the values are few,
//! then a log-bucketed sketch (each value within 1 % of the true one, DDSketch's idea).

use std::collections::BTreeMap;

/// Values kept as they are before switching to the sketch.
pub const EXACT_MAX: usize = 512;
/// Bucket growth: a bucket's representative is within (γ−1)/(γ+1) ≈ 1 % of any value in it.
const GAMMA: f64 = 1.02;
/// Values are clamped into this range (seconds): it bounds the number of buckets (≈ 1 600).
const MIN_VALUE: f64 = 1e-6;
const MAX_VALUE: f64 = 1e6;

#[derive(Clone, Debug, Default)]
pub struct Quantiles {
    /// Sorted; emptied when the sketch takes over.
    exact: Vec<f64>,
    /// Bucket index → count, once more than [`EXACT_MAX`] values were seen.
    buckets: BTreeMap<i32, u64>,
    count: u64,
}

fn index(v: f64) -> i32 {
    (v.clamp(MIN_VALUE, MAX_VALUE).ln() / GAMMA.ln()).ceil() as i32
}

/// The value a bucket stands for: the middle of (γ^(i−1), γ^i] in relative terms.
fn representative(i: i32) -> f64 {
    2.0 * GAMMA.powi(i) / (GAMMA + 1.0)
}

impl Quantiles {
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Records a value (negative and non-finite ones are ignored).
    pub fn record(&mut self, v: f64) {
        if !v.is_finite() || v < 0.0 {
            return;
        }
        self.count += 1;
        if self.buckets.is_empty() && self.exact.len() < EXACT_MAX {
            let at = self.exact.partition_point(|x| *x <= v);
            self.exact.insert(at, v);
            return;
        }
        for x in std::mem::take(&mut self.exact) {
            *self.buckets.entry(index(x)).or_default() += 1;
        }
        *self.buckets.entry(index(v)).or_default() += 1;
    }

    /// The nearest-rank `q`-quantile (0 < q ≤ 1): the smallest value with at least q·n values at
    /// or below it. Exact up to [`EXACT_MAX`] values, within 1 % after.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if self.buckets.is_empty() {
            return self.exact.get(rank as usize - 1).copied();
        }
        let mut seen = 0;
        for (i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(representative(*i));
            }
        }
        None
    }

    /// Buckets held (bounded by the clamped range).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_few() {
        let mut q = Quantiles::default();
        assert_eq!(q.quantile(0.5), None);
        for v in [0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6, 1.0] {
            q.record(v);
        }
        q.record(f64::NAN);
        q.record(-1.0);
        assert_eq!(q.count(), 10);
        // Nearest rank: p50 of 10 values is the 5th, p95 the 10th.
        assert_eq!(q.quantile(0.5), Some(0.5));
        assert_eq!(q.quantile(0.95), Some(1.0));
        assert_eq!(q.quantile(0.1), Some(0.1));
        assert_eq!(q.quantile(0.11), Some(0.2));
    }

    #[test]
    fn the_sketch_stays_within_one_percent_and_bounded() {
        let mut q = Quantiles::default();
        let values: Vec<f64> = (1..=100_000).map(|i| i as f64 / 1000.0).collect();
        // Scrambled order, deterministic.
        for k in 0..values.len() {
            q.record(values[(k * 7919) % values.len()]);
        }
        assert!(q.exact.is_empty() && q.count() == 100_000);
        for (p, want) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0), (0.01, 1.0)] {
            let got = q.quantile(p).unwrap();
            assert!((got - want).abs() / want <= 0.0101, "p{p}: {got} vs {want}");
        }
        // Values far out of range are clamped: the bucket count stays bounded.
        for e in -30..30 {
            q.record(10f64.powi(e));
        }
        assert!(q.buckets() < 1700, "{}", q.buckets());
    }
}
