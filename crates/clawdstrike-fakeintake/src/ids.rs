//! Deterministic pseudo-random numbers (SplitMix64) for ids and random faults.
//!
//! Written here rather than taken from `rand` so that a seed gives the same sequence whatever
//! version of a dependency is resolved: soak tests replay a seed across releases.

/// SplitMix64: tiny, fast, and good enough for ids and fault dice.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float uniformly distributed in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An id shaped like Datadog's dashboard and rule ids: `abc-d3f-gh1`.
    pub(crate) fn triple_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(11);
        let mut bits = self.next_u64();
        for i in 0..9 {
            if i > 0 && i % 3 == 0 {
                out.push('-');
            }
            out.push(ALPHABET[(bits % 36) as usize] as char);
            bits /= 36;
        }
        out
    }

    /// An id shaped like a Datadog security signal id (opaque, URL-safe).
    pub(crate) fn signal_id(&mut self) -> String {
        format!(
            "AQAAAY{:016x}{:08x}",
            self.next_u64(),
            self.next_u64() as u32
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triple_ids_have_datadog_shape_and_are_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            let id = a.triple_id();
            assert_eq!(id, b.triple_id());
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert!(parts.iter().all(|p| {
                p.len() == 3
                    && p.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            }));
        }
    }

    #[test]
    fn floats_are_in_unit_interval() {
        let mut r = SplitMix64::new(1);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
