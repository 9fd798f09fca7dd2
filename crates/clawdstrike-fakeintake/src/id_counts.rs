//! How many times each event id arrived: one update per item received, so it must be cheap.
//!
//! Canonical UUIDs (lowercase, hyphenated: what our exporters send) are kept as 128-bit numbers
//! in a [`UuidSet`], anything else as text; both read back as the id exactly as received.

use std::collections::HashMap;

/// An item's id, read once outside the intake's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Id<'a> {
    /// A lowercase hyphenated UUID, as a number.
    Uuid(u128),
    /// Any other text.
    Text(&'a str),
}

impl<'a> Id<'a> {
    pub(crate) fn parse(id: &'a str) -> Self {
        canonical_uuid(id).map_or(Id::Text(id), Id::Uuid)
    }
}

#[derive(Debug, Default)]
pub(crate) struct IdCounts {
    /// Every UUID seen: a set rather than a map to counts, since nearly every id arrives once.
    uuids: UuidSet,
    /// The UUIDs seen more than once, with their counts.
    repeated: HashMap<u128, u32, foldhash::fast::RandomState>,
    others: HashMap<String, u32, foldhash::fast::RandomState>,
}

impl IdCounts {
    /// Room for `count` distinct canonical UUIDs before the table grows.
    pub(crate) fn with_capacity(count: usize) -> Self {
        Self {
            uuids: UuidSet::with_capacity(count),
            repeated: HashMap::default(),
            others: HashMap::default(),
        }
    }

    /// Starts the memory accesses that [`bump`](Self::bump) will make for `ids` (a request's
    /// worth), all at once: see [`UuidSet::warm`].
    pub(crate) fn warm<'a>(&self, ids: impl Iterator<Item = &'a Id<'a>>) {
        self.uuids.warm(ids.filter_map(|id| match id {
            Id::Uuid(n) => Some(*n),
            Id::Text(_) => None,
        }));
    }

    /// Counts one arrival of `id`; returns how many there have been, this one included.
    pub(crate) fn bump(&mut self, id: &Id<'_>) -> u32 {
        match *id {
            Id::Uuid(n) if self.uuids.insert(n) => 1,
            Id::Uuid(n) => {
                let count = self.repeated.entry(n).or_insert(1);
                *count += 1;
                *count
            }
            Id::Text(id) => {
                let count = match self.others.get_mut(id) {
                    Some(count) => count,
                    None => self.others.entry(id.to_owned()).or_insert(0),
                };
                *count += 1;
                *count
            }
        }
    }

    /// Every id with its count.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (String, u32)> + '_ {
        self.uuids
            .iter()
            .map(|n| (format_uuid(n), self.repeated.get(&n).copied().unwrap_or(1)))
            .chain(self.others.iter().map(|(id, count)| (id.clone(), *count)))
    }
}

/// A set of 128-bit numbers: open addressing with linear probing in one array, 16 bytes a
/// slot, at most three quarters full. An insert is one random access into that array (a
/// general-purpose table makes two: control bytes, then the slot), and [`warm`](Self::warm)
/// issues a whole request's accesses before the inserts, as independent loads that the CPU
/// overlaps, so the inserts that follow mostly find their slots in cache.
#[derive(Debug)]
struct UuidSet {
    /// `0` marks an empty slot; the nil UUID is kept in `has_nil` instead.
    slots: Vec<u128>,
    /// Numbers in `slots`.
    filled: usize,
    /// `64 - log2(slots.len())`: the home slot is the top bits of the hash.
    shift: u32,
    has_nil: bool,
}

impl Default for UuidSet {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl UuidSet {
    /// Room for `count` numbers (at most 3/4 of the slots filled), and at least 1,024 slots;
    /// the 1,024 alone if the table for `count` cannot be allocated.
    fn with_capacity(count: usize) -> Self {
        const MIN_BITS: u32 = 10;
        let bits = count
            .saturating_mul(4)
            .div_ceil(3)
            .checked_next_power_of_two()
            .map_or(usize::BITS - 1, usize::trailing_zeros)
            .clamp(MIN_BITS, 48);
        let mut slots = Vec::new();
        let bits = if slots.try_reserve_exact(1 << bits).is_ok() {
            bits
        } else {
            MIN_BITS
        };
        slots.resize(1 << bits, 0);
        Self {
            slots,
            filled: 0,
            shift: 64 - bits,
            has_nil: false,
        }
    }

    /// Fibonacci hashing of the two halves folded together: sequential ids (ours in tests)
    /// spread as well as random ones.
    #[inline]
    fn home(&self, n: u128) -> usize {
        let folded = (n as u64) ^ ((n >> 64) as u64).rotate_left(29);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Reads the home slot of every number: the loads do not depend on one another, so they
    /// overlap, and the inserts that follow find those cache lines loaded.
    fn warm(&self, numbers: impl Iterator<Item = u128>) {
        let mut fold = 0u128;
        for n in numbers {
            fold ^= self.slots[self.home(n)];
        }
        std::hint::black_box(fold);
    }

    /// Adds `n`; false if it was already there.
    fn insert(&mut self, n: u128) -> bool {
        if n == 0 {
            return !std::mem::replace(&mut self.has_nil, true);
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(n);
        loop {
            match self.slots[at] {
                0 => break,
                there if there == n => return false,
                _ => at = (at + 1) & mask,
            }
        }
        if (self.filled + 1) * 4 > self.slots.len() * 3 {
            self.grow();
            at = self.free_slot(n);
        }
        self.slots[at] = n;
        self.filled += 1;
        true
    }

    /// The first empty slot from `n`'s home on (`n` known to be absent).
    fn free_slot(&self, n: u128) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = self.home(n);
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        at
    }

    fn grow(&mut self) {
        let doubled = vec![0; 2 * self.slots.len()];
        let old = std::mem::replace(&mut self.slots, doubled);
        self.shift -= 1;
        for n in old.into_iter().filter(|&n| n != 0) {
            let at = self.free_slot(n);
            self.slots[at] = n;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.filled + usize::from(self.has_nil)
    }

    fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        self.has_nil
            .then_some(0)
            .into_iter()
            .chain(self.slots.iter().copied().filter(|&n| n != 0))
    }
}

/// The value of a lowercase hyphenated UUID (`8-4-4-4-12` hex digits), or `None`.
fn canonical_uuid(id: &str) -> Option<u128> {
    let bytes = id.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut n = 0u128;
    for (i, &c) in bytes.iter().enumerate() {
        let digit = match (i, c) {
            (8 | 13 | 18 | 23, b'-') => continue,
            (8 | 13 | 18 | 23, _) => return None,
            (_, b'0'..=b'9') => c - b'0',
            (_, b'a'..=b'f') => c - b'a' + 10,
            _ => return None,
        };
        n = n << 4 | u128::from(digit);
    }
    Some(n)
}

fn format_uuid(n: u128) -> String {
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::ids::SplitMix64;

    #[test]
    fn ids_read_back_exactly_as_received_and_are_counted() {
        let mut counts = IdCounts::default();
        let ids = [
            "0194a1b2-0000-7000-8000-00000000002a", // canonical: stored as a number
            "0194A1B2-0000-7000-8000-00000000002A", // uppercase: stored as text
            "0194a1b2000070008000000000000002a",    // no hyphens
            "0194a1b2-0000-7000-8000_00000000002a", // wrong separator
            "g194a1b2-0000-7000-8000-00000000002a", // not hex
            "00000000-0000-0000-0000-000000000000", // the nil UUID: a number too
            "evt-1",
            "",
        ];
        let parsed: Vec<Id<'_>> = ids.iter().map(|id| Id::parse(id)).collect();
        counts.warm(parsed.iter());
        for (id, p) in ids.iter().zip(&parsed) {
            assert_eq!(counts.bump(p), 1, "{id}");
        }
        assert_eq!(counts.bump(&parsed[0]), 2);
        assert_eq!(counts.bump(&parsed[0]), 3);
        assert_eq!(counts.bump(&parsed[1]), 2);
        assert_eq!(counts.bump(&parsed[5]), 2);
        assert_eq!(counts.uuids.len(), 2);
        let mut got: Vec<(String, u32)> = counts.iter().collect();
        got.sort();
        let mut want: Vec<(String, u32)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    (*id).to_owned(),
                    [3, 2, 1, 1, 1, 2].get(i).copied().unwrap_or(1),
                )
            })
            .collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_set_sized_for_n_numbers_takes_them_without_growing() {
        for count in [0usize, 1, 767, 768, 769, 1_500, 100_000] {
            let mut set = UuidSet::with_capacity(count);
            let slots = set.slots.len();
            assert!(slots >= 1024, "{count}");
            assert!(
                slots < 2 * (count * 4 / 3).max(1024),
                "{count}: {slots} slots"
            );
            for i in 1..=count as u128 {
                assert!(set.insert(i << 64 | i));
            }
            assert_eq!(set.slots.len(), slots, "{count}");
            assert_eq!(set.len(), count);
        }
        // Exactly full (768 of 1,024 slots): one more grows it, and every number is still
        // found where the grown table looks for it.
        let mut set = UuidSet::with_capacity(768);
        for i in 1..=768u128 {
            assert!(set.insert(i << 64 | i));
        }
        assert_eq!(set.slots.len(), 1024);
        assert!(set.insert(u128::MAX));
        assert_eq!(set.slots.len(), 2048);
        for i in 1..=768u128 {
            assert!(!set.insert(i << 64 | i), "{i} lost in the growth");
        }
        assert!(!set.insert(u128::MAX));
        // A count too large to allocate for starts small instead of aborting.
        assert_eq!(UuidSet::with_capacity(usize::MAX / 2).slots.len(), 1024);
    }

    /// Against the standard set, through several growths: random numbers, sequential ones
    /// (which share their high half, as ours do) and repeats of both, the nil UUID among them.
    #[test]
    fn the_uuid_set_agrees_with_a_hash_set() {
        let mut rng = SplitMix64::new(9);
        let mut ours = UuidSet::default();
        let mut theirs: HashSet<u128> = HashSet::new();
        let mut seen = Vec::new();
        for i in 0..200_000u128 {
            let n = match rng.next_u64() % 8 {
                0 if !seen.is_empty() => seen[(rng.next_u64() % seen.len() as u64) as usize],
                1 => 0,
                2..=4 => 0x0194_0000_0000_7000_8000_0000_0000_0000 | i,
                _ => u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
            };
            if i % 1000 == 0 {
                ours.warm([n, n ^ 1].into_iter());
            }
            assert_eq!(ours.insert(n), theirs.insert(n), "insert {n:#x} (step {i})");
            seen.push(n);
        }
        assert!(
            ours.slots.len() > 1 << 17,
            "grew: {} slots",
            ours.slots.len()
        );
        assert_eq!(ours.len(), theirs.len());
        let mut listed: Vec<u128> = ours.iter().collect();
        listed.sort_unstable();
        let mut want: Vec<u128> = theirs.into_iter().collect();
        want.sort_unstable();
        assert_eq!(listed, want);
    }
}
