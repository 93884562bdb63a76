//! Snowflake id generation: 41 bits of milliseconds since 2026-01-01, 10 bits of node id,
//! 12 bits of sequence. Ids sort by creation time and never repeat within a node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: u64 = 1_767_225_600_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Generates snowflake ids for one node.
#[derive(Debug)]
pub struct Snowflakes {
    node: u64,
    /// `(ms << SEQ_BITS) | seq` of the last id handed out.
    last: AtomicU64,
}

impl Snowflakes {
    /// A generator for node `node` (only its low 10 bits are used).
    pub fn new(node: u16) -> Self {
        Self { node: u64::from(node) & ((1 << NODE_BITS) - 1), last: AtomicU64::new(0) }
    }

    /// The next id.
    pub fn next_id(&self) -> i64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(EPOCH_MS)
            .saturating_sub(EPOCH_MS);
        let candidate = now_ms << SEQ_BITS;
        // Take max(now, last + 1): monotonic even if the clock steps back or 4096 ids are
        // needed within one millisecond (then we borrow from the next millisecond).
        let mut last = self.last.load(Ordering::Relaxed);
        let stamp = loop {
            let next = candidate.max(last + 1);
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(actual) => last = actual,
            }
        };
        let ms = stamp >> SEQ_BITS;
        let seq = stamp & SEQ_MASK;
        ((ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | seq) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_increasing() {
        let gen = Snowflakes::new(3);
        let mut prev = 0;
        for _ in 0..20_000 {
            let id = gen.next_id();
            assert!(id > prev, "{id} after {prev}");
            assert_eq!((id >> SEQ_BITS) & ((1 << NODE_BITS) - 1), 3);
            prev = id;
        }
    }
}
