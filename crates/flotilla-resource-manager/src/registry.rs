//! The queries coordinators registered before answering their clients, kept so a live
//! coordinator can adopt one whose owner died (the protocol is described in
//! `flotilla_proto::adoption`); and, on the admission leader, who won each adoption.
//!
//! Bounded: at most [`MAX_REGISTRATIONS`] entries and [`MAX_REGISTERED_BYTES`] of them; a
//! registration beyond is refused (the query runs, but cannot be adopted). Registrations are
//! forgotten when their owner says the client has the final answer, and
//! [`GONE_RETENTION`] after their owner is gone (a client that has not come back by then
//! has given up).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flotilla_proto::adoption::{AdoptAnswer, AdoptRequest, QueryRegistration};

/// Registrations one resource manager keeps at most.
pub const MAX_REGISTRATIONS: usize = 200_000;
/// The memory they may take, roughly.
pub const MAX_REGISTERED_BYTES: usize = 512 << 20;
/// How long a registration outlives its owner, waiting for a follow-up to adopt it.
pub const GONE_RETENTION: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Entry {
    registration: QueryRegistration,
    /// Since when its owner has been seen gone (for the retention).
    gone_since: Option<Instant>,
}

/// Why a registration was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("the resource manager holds {entries} registrations ({bytes} bytes), its limit")]
    Full { entries: usize, bytes: usize },
    #[error("invalid registration: {0}")]
    Invalid(String),
}

/// Registrations by query id.
#[derive(Debug, Default)]
pub struct Registry {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Registry {
    /// Keeps `registration` unless one of a higher epoch is known (an older adoption
    /// arriving late changes nothing).
    pub fn register(&mut self, registration: QueryRegistration) -> Result<(), RegistrationError> {
        if registration.query_id.parse::<flotilla_proto::QueryId>().is_err() {
            return Err(RegistrationError::Invalid(format!("'{}' is not a query id", registration.query_id)));
        }
        let weight = registration.weight();
        match self.entries.get(&registration.query_id) {
            Some(known) if known.registration.epoch > registration.epoch => return Ok(()),
            Some(known) => self.bytes -= known.registration.weight(),
            None if self.entries.len() >= MAX_REGISTRATIONS || self.bytes + weight > MAX_REGISTERED_BYTES => {
                return Err(RegistrationError::Full { entries: self.entries.len(), bytes: self.bytes });
            }
            None => {}
        }
        self.bytes += weight;
        self.entries.insert(registration.query_id.clone(), Entry { registration, gone_since: None });
        Ok(())
    }

    pub fn get(&self, query_id: &str) -> Option<&QueryRegistration> {
        self.entries.get(query_id).map(|e| &e.registration)
    }

    /// Drops `owner`'s registrations of `query_ids` (another coordinator's are kept: only
    /// the owner knows its client has the final answer).
    pub fn forget(&mut self, owner: &str, query_ids: &[String]) {
        for id in query_ids {
            if self.entries.get(id).is_some_and(|e| e.registration.owner == owner) {
                if let Some(entry) = self.entries.remove(id) {
                    self.bytes -= entry.registration.weight();
                }
            }
        }
    }

    /// Drops registrations whose owner has been gone for [`GONE_RETENTION`];
    /// `live(node, instance)` says whether a coordinator is alive.
    pub fn sweep(&mut self, live: impl Fn(&str, &str) -> bool, now: Instant) {
        let mut dropped = 0;
        self.entries.retain(|_, entry| {
            if live(&entry.registration.owner, &entry.registration.owner_instance) {
                entry.gone_since = None;
                return true;
            }
            let since = *entry.gone_since.get_or_insert(now);
            let keep = now.saturating_duration_since(since) < GONE_RETENTION;
            if !keep {
                dropped += entry.registration.weight();
            }
            keep
        });
        self.bytes -= dropped;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The leader's decision on a claim. `owner_gone(registration)` says whether the
    /// registered owner is gone (decided by the caller, which may probe it). Exactly one
    /// claimant wins an epoch: the winner's registration (epoch + 1, owned by it) replaces
    /// the old one at once, so every later claim is told who owns the query.
    pub fn adopt(&mut self, request: &AdoptRequest, owner_gone: impl Fn(&QueryRegistration) -> bool) -> AdoptAnswer {
        // The claimant's copy counts instead of ours when we have none, or when it is of a
        // later epoch of the same query (an adoption we missed).
        let claimed = &request.registration;
        let newer = match self.get(&claimed.query_id) {
            None => true,
            Some(known) => claimed.epoch > known.epoch && claimed.slug == known.slug && claimed.sql == known.sql,
        };
        if newer {
            let _ = self.register(claimed.clone());
        }
        let current = self.get(&request.registration.query_id).cloned().unwrap_or_else(|| request.registration.clone());
        if current.owner == request.adopter && current.owner_instance == request.adopter_instance {
            return AdoptAnswer::Granted { epoch: current.epoch };
        }
        if current.slug != request.registration.slug {
            return AdoptAnswer::OwnedBy { owner: current.owner, uri: current.owner_uri, epoch: current.epoch };
        }
        if !owner_gone(&current) {
            return AdoptAnswer::OwnedBy { owner: current.owner, uri: current.owner_uri, epoch: current.epoch };
        }
        let adopted = QueryRegistration {
            owner: request.adopter.clone(),
            owner_instance: request.adopter_instance.clone(),
            owner_uri: request.adopter_uri.clone(),
            epoch: current.epoch + 1,
            ..current
        };
        let epoch = adopted.epoch;
        // Replacing an entry never needs room; a claim for one we could not keep is granted
        // all the same (the claimant registers it everywhere next).
        let _ = self.register(adopted);
        AdoptAnswer::Granted { epoch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(owner: &str, epoch: u32) -> QueryRegistration {
        QueryRegistration {
            query_id: "20261201_101010_00001_abcde".into(),
            slug: "yslug".into(),
            sql: "SELECT 1".into(),
            session_headers: vec![("x-trino-user".into(), "alice".into())],
            create_time_ms: 1,
            owner: owner.into(),
            owner_instance: format!("{owner}-i"),
            owner_uri: format!("http://{owner}"),
            epoch,
            write: false,
            started: false,
        }
    }

    fn claim(by: &str, registration: QueryRegistration) -> AdoptRequest {
        AdoptRequest {
            registration,
            adopter: by.into(),
            adopter_instance: format!("{by}-i"),
            adopter_uri: format!("http://{by}"),
        }
    }

    #[test]
    fn one_claimant_wins_and_the_others_are_sent_to_it() {
        let mut registry = Registry::default();
        registry.register(registration("c1", 0)).unwrap();
        let gone = |r: &QueryRegistration| r.owner == "c1";
        assert_eq!(registry.adopt(&claim("c2", registration("c1", 0)), gone), AdoptAnswer::Granted { epoch: 1 });
        // The racing claim read the same registration: c2 owns it now, and is alive.
        assert_eq!(
            registry.adopt(&claim("c3", registration("c1", 0)), gone),
            AdoptAnswer::OwnedBy { owner: "c2".into(), uri: "http://c2".into(), epoch: 1 }
        );
        // Asking again is granted again (a retried claim).
        assert_eq!(registry.adopt(&claim("c2", registration("c1", 0)), gone), AdoptAnswer::Granted { epoch: 1 });
        // A live owner keeps its query.
        let nobody_gone = |_: &QueryRegistration| false;
        let mut registry = Registry::default();
        assert!(matches!(
            registry.adopt(&claim("c2", registration("c1", 0)), nobody_gone),
            AdoptAnswer::OwnedBy { epoch: 0, .. }
        ));
        // The adopter dies too: the next claim takes the next epoch.
        let mut registry = Registry::default();
        registry.register(registration("c2", 1)).unwrap();
        assert_eq!(registry.adopt(&claim("c3", registration("c2", 1)), |_| true), AdoptAnswer::Granted { epoch: 2 });
        assert_eq!(registry.get("20261201_101010_00001_abcde").unwrap().owner, "c3");
    }

    #[test]
    fn late_and_hostile_registrations_change_nothing() {
        let mut registry = Registry::default();
        registry.register(registration("c2", 1)).unwrap();
        // The dead owner's registration arriving late: the adoption stays.
        registry.register(registration("c1", 0)).unwrap();
        assert_eq!(registry.get("20261201_101010_00001_abcde").unwrap().owner, "c2");
        // A claim with the wrong slug learns nothing it can use and wins nothing.
        let mut wrong = registration("c2", 1);
        wrong.slug = "yguess".into();
        assert!(matches!(registry.adopt(&claim("c9", wrong), |_| true), AdoptAnswer::OwnedBy { .. }));
        assert_eq!(registry.get("20261201_101010_00001_abcde").unwrap().owner, "c2");
        // Not a query id.
        let mut bad = registration("c1", 0);
        bad.query_id = "../../etc".into();
        assert!(matches!(registry.register(bad), Err(RegistrationError::Invalid(_))));
        // Only the owner forgets its query.
        registry.forget("c1", &["20261201_101010_00001_abcde".into()]);
        assert_eq!(registry.len(), 1);
        registry.forget("c2", &["20261201_101010_00001_abcde".into()]);
        assert!(registry.is_empty());
        assert_eq!(registry.bytes, 0);
    }

    #[test]
    fn registrations_are_bounded_and_outlive_their_owner_for_a_while() {
        let mut registry = Registry::default();
        let mut huge = registration("c1", 0);
        huge.sql = "x".repeat(MAX_REGISTERED_BYTES);
        assert!(matches!(registry.register(huge), Err(RegistrationError::Full { .. })));
        registry.register(registration("c1", 0)).unwrap();
        let start = Instant::now();
        registry.sweep(|_, _| false, start);
        assert_eq!(registry.len(), 1);
        registry.sweep(|_, _| false, start + GONE_RETENTION);
        assert!(registry.is_empty());
        assert_eq!(registry.bytes, 0);
    }
}
