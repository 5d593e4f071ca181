//! Requests in flight, per model, operation and API: the calls whose request has been read in
//! full and whose response has not ended — what Ollama is running or holding in its queue. Kept
//! at every call's start and end, so the peak between two readings is exact: no burst is missed
//! however rarely the gauge is read.

use std::collections::BTreeMap;

use super::provider::Provider;
use super::route::{Api, Operation};

/// One series: who is asked what.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InFlightKey {
    pub provider: Provider,
    pub model: String,
    pub operation: Operation,
    pub api: Api,
}

/// A series' reading: calls in flight now, and the most at once since the previous reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlightReading {
    /// `None`: the overflow series (beyond [`MAX_SERIES`]).
    pub key: Option<InFlightKey>,
    pub current: u64,
    pub peak: u64,
}

/// Series kept; further ones share one overflow series (model names come from the wire).
pub const MAX_SERIES: usize = 1000;

#[derive(Clone, Debug, Default)]
pub struct InFlightGauges {
    series: BTreeMap<Option<InFlightKey>, (u64, u64)>,
}

impl InFlightGauges {
    /// A call of `key` starts; the series it was counted in (to end it with).
    pub fn start(&mut self, key: InFlightKey) -> Option<InFlightKey> {
        let slot = if self.series.len() >= MAX_SERIES && !self.series.contains_key(&Some(key.clone())) {
            None
        } else {
            Some(key)
        };
        let (current, peak) = self.series.entry(slot.clone()).or_default();
        *current += 1;
        *peak = (*peak).max(*current);
        slot
    }

    /// A call counted in `slot` ended.
    pub fn end(&mut self, slot: &Option<InFlightKey>) {
        if let Some((current, _)) = self.series.get_mut(slot) {
            *current = current.saturating_sub(1);
        }
    }

    /// Every series' reading; the peaks start again from the current values. A series that
    /// fell to 0 is read once as 0, then forgotten.
    pub fn read(&mut self) -> Vec<InFlightReading> {
        let out = self
            .series
            .iter()
            .map(|(key, (current, peak))| InFlightReading { key: key.clone(), current: *current, peak: *peak })
            .collect();
        self.series.retain(|_, (current, peak)| {
            let keep = *peak > 0;
            *peak = *current;
            keep
        });
        out
    }

    /// Calls in flight over every series.
    pub fn total(&self) -> u64 {
        self.series.values().map(|(c, _)| c).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str) -> InFlightKey {
        InFlightKey { provider: Provider::Ollama, model: model.into(), operation: Operation::Chat, api: Api::Native }
    }

    #[test]
    fn the_peak_between_readings_is_exact() {
        let mut g = InFlightGauges::default();
        let slots: Vec<_> = (0..5).map(|_| g.start(key("a"))).collect();
        for s in &slots[..4] {
            g.end(s);
        }
        let b = g.start(key("b"));
        let r = g.read();
        assert_eq!(
            r,
            [
                InFlightReading { key: Some(key("a")), current: 1, peak: 5 },
                InFlightReading { key: Some(key("b")), current: 1, peak: 1 },
            ]
        );
        g.end(&slots[4]);
        g.end(&b);
        // Each fell to 0: read as 0 once (peaks start from the current values), then gone.
        let r = g.read();
        assert_eq!(r.iter().map(|r| (r.current, r.peak)).collect::<Vec<_>>(), [(0, 1), (0, 1)]);
        let r = g.read();
        assert_eq!(r.iter().map(|r| (r.current, r.peak)).collect::<Vec<_>>(), [(0, 0), (0, 0)]);
        assert!(g.read().is_empty());
    }

    #[test]
    fn series_beyond_the_cap_share_the_overflow_series() {
        let mut g = InFlightGauges::default();
        for i in 0..MAX_SERIES + 3 {
            g.start(key(&format!("m{i}")));
        }
        let r = g.read();
        assert_eq!(r.len(), MAX_SERIES + 1);
        assert_eq!(r.iter().find(|r| r.key.is_none()).map(|r| (r.current, r.peak)), Some((3, 3)));
        assert_eq!(g.total(), (MAX_SERIES + 3) as u64);
    }
}
