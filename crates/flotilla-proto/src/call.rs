//! How an internal call between nodes fails: one type for every control-plane call
//! (heartbeats, peer syncs, the cluster view, leases, relays), so callers branch on what
//! happened rather than on a message.

use serde::de::DeserializeOwned;

/// An internal call that got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The node could not be reached or did not answer in time; the call may not have
    /// been seen at all.
    #[error("failed to reach {base}: {cause}")]
    Unreachable { base: String, cause: String },
    /// The node answered with a status other than success; `body` is what it said (a typed
    /// refusal, see [`CallError::refusal`], or a message).
    #[error("{base} answered {status}: {}", String::from_utf8_lossy(.body).trim())]
    Refused { base: String, status: u16, body: Vec<u8> },
    /// The node answered success with a body that does not decode.
    #[error("unreadable answer from {base}: {cause}")]
    BadAnswer { base: String, cause: String },
    /// The call could not be made (nothing to call, a request that cannot be built).
    #[error("{0}")]
    NotSent(String),
    /// The call was tried on each of several nodes that can answer it, and each failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<CallError>),
}

impl CallError {
    /// `errors` of the nodes tried in turn, or `none` when there was no node to try.
    pub fn all_failed(mut errors: Vec<CallError>, none: &str) -> CallError {
        match errors.len() {
            0 => CallError::NotSent(none.to_string()),
            1 => errors.remove(0),
            _ => CallError::AllFailed(errors),
        }
    }

    /// A refusal's body as the typed refusal `T` the callee sends with `status`.
    pub fn refusal<T: DeserializeOwned>(&self, status: u16) -> Option<T> {
        match self {
            CallError::Refused { status: got, body, .. } if *got == status => serde_json::from_slice(body).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::LeaseRefusal;

    #[test]
    fn refusals_decode_as_their_type_and_status_only() {
        let refusal = LeaseRefusal::NotLeader { leader: "rm-1".into(), uri: "http://127.0.0.1:1".into() };
        let error =
            CallError::Refused { base: "http://rm-2".into(), status: 409, body: serde_json::to_vec(&refusal).unwrap() };
        assert_eq!(error.refusal::<LeaseRefusal>(409), Some(refusal));
        assert_eq!(error.refusal::<LeaseRefusal>(400), None);
        let garbage = CallError::Refused { base: "b".into(), status: 409, body: b"{\"uri\": 3}".to_vec() };
        assert_eq!(garbage.refusal::<LeaseRefusal>(409), None);
        assert!(garbage.to_string().contains("answered 409"), "{garbage}");
    }
}
