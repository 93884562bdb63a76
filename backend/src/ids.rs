//! Snowflake id generation: 41 bits of milliseconds since 2026-01-01, 10 bits of node id,
//! 12 bits of sequence. Ids sort by creation time and never repeat within a node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// 2026-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: u64 = 1_767_225_600_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The id of a node among those sharing a database: 0 to 1023 (10 bits). Two nodes with the
/// same id could hand out the same id in the same millisecond, so each needs its own; a value
/// out of range is refused (cutting it to 10 bits would make 1024 collide with 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u16")]
pub struct NodeId(u16);

/// A `node_id` out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node_id must be from 0 to {max} (one distinct value per node sharing a database), got {0}", max = NodeId::MAX)]
pub struct InvalidNodeId(pub u64);

impl NodeId {
    /// The largest node id.
    pub const MAX: u16 = (1 << NODE_BITS) - 1;

    /// Checks `raw` is in 0..=1023.
    pub fn new(raw: u64) -> Result<Self, InvalidNodeId> {
        u16::try_from(raw).ok().filter(|n| *n <= Self::MAX).map(Self).ok_or(InvalidNodeId(raw))
    }

    /// The id as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u64> for NodeId {
    type Error = InvalidNodeId;
    fn try_from(raw: u64) -> Result<Self, Self::Error> {
        Self::new(raw)
    }
}

impl From<NodeId> for u16 {
    fn from(node: NodeId) -> Self {
        node.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Generates snowflake ids for one node.
#[derive(Debug)]
pub struct Snowflakes {
    node: u64,
    /// `(ms << SEQ_BITS) | seq` of the last id handed out.
    last: AtomicU64,
}

impl Snowflakes {
    /// A generator for node `node`.
    pub fn new(node: NodeId) -> Self {
        Self { node: u64::from(node.0), last: AtomicU64::new(0) }
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
        let gen = Snowflakes::new(NodeId::new(3).expect("node id"));
        let mut prev = 0;
        for _ in 0..20_000 {
            let id = gen.next_id();
            assert!(id > prev, "{id} after {prev}");
            assert_eq!((id >> SEQ_BITS) & ((1 << NODE_BITS) - 1), 3);
            prev = id;
        }
    }

    #[test]
    fn node_ids_out_of_range_are_refused_not_truncated() {
        assert_eq!(NodeId::new(0).map(NodeId::get), Ok(0));
        assert_eq!(NodeId::new(1023).map(NodeId::get), Ok(1023));
        assert_eq!(NodeId::new(1024), Err(InvalidNodeId(1024)));
        assert_eq!(NodeId::new(70_000), Err(InvalidNodeId(70_000)));
        assert!(InvalidNodeId(1024).to_string().contains("0 to 1023"));
        let max = Snowflakes::new(NodeId::new(1023).expect("max"));
        assert_eq!((max.next_id() >> SEQ_BITS) & ((1 << NODE_BITS) - 1), 1023);
    }
}
