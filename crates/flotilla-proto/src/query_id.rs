//! Query ids in Trino's shape, `YYYYMMDD_HHMMSS_NNNNN_xxxxx`, whose last five characters name
//! the coordinator that owns the query, so any node can route a follow-up from the id alone.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rand::Rng;

const COORDINATOR_ID_LEN: usize = 5;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Five lowercase alphanumerics identifying one coordinator process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoordinatorId(String);

impl CoordinatorId {
    /// A fresh random id; a restarted process gets a new one, so ids never alias.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        let id = (0..COORDINATOR_ID_LEN).map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char).collect();
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CoordinatorId {
    type Err = QueryIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid =
            text.len() == COORDINATOR_ID_LEN && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(QueryIdParseError(format!(
                "coordinator id must be {COORDINATOR_ID_LEN} lowercase letters or digits, got '{text}'"
            )));
        }
        Ok(Self(text.to_string()))
    }
}

impl fmt::Display for CoordinatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The text did not have the shape of a query id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryIdParseError(String);

/// A query id; `Display` gives Trino's text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryId(String);

impl QueryId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The coordinator that created (and owns) this query.
    pub fn coordinator(&self) -> CoordinatorId {
        // The constructor and parser both guarantee the suffix is a valid coordinator id.
        CoordinatorId(self.0[self.0.len() - COORDINATOR_ID_LEN..].to_string())
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for QueryId {
    type Err = QueryIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('_').collect();
        let shape_ok = parts.len() == 4
            && parts[0].len() == 8
            && parts[1].len() == 6
            && !parts[2].is_empty()
            && parts[..3].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if !shape_ok {
            return Err(QueryIdParseError(format!("invalid query id '{text}'")));
        }
        parts[3].parse::<CoordinatorId>()?;
        Ok(Self(text.to_string()))
    }
}

/// Makes query ids for one coordinator: the counter makes them unique within a process and
/// the suffix across processes.
#[derive(Debug)]
pub struct QueryIdGenerator {
    coordinator: CoordinatorId,
    counter: AtomicU64,
}

impl QueryIdGenerator {
    pub fn new(coordinator: CoordinatorId) -> Self {
        Self { coordinator, counter: AtomicU64::new(0) }
    }

    pub fn coordinator(&self) -> &CoordinatorId {
        &self.coordinator
    }

    pub fn next(&self) -> QueryId {
        self.next_at(Utc::now())
    }

    fn next_at(&self, now: DateTime<Utc>) -> QueryId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % 100_000;
        QueryId(format!("{}_{n:05}_{}", now.format("%Y%m%d_%H%M%S"), self.coordinator))
    }
}

/// `len` random lowercase hex digits (node instance ids, generated secrets).
pub fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_trino_shape_and_owner_suffix() {
        let coordinator: CoordinatorId = "ab12z".parse().unwrap();
        let generator = QueryIdGenerator::new(coordinator.clone());
        let first = generator.next();
        let second = generator.next();
        assert_ne!(first, second);
        let parsed: QueryId = first.as_str().parse().unwrap();
        assert_eq!(parsed.coordinator(), coordinator);
        assert_eq!(first.as_str().len(), "20260101_000000_00000_ab12z".len());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "x",
            "20260101_000000_00000_ABCDE",
            "20260101_000000_00000_abc",
            "2026_000000_00000_abcde",
            "../../etc",
        ] {
            assert!(bad.parse::<QueryId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_coordinator_ids_parse() {
        for _ in 0..100 {
            let id = CoordinatorId::random();
            assert_eq!(id.as_str().parse::<CoordinatorId>().unwrap(), id);
        }
    }
}
