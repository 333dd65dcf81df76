//! Idempotent creates: what an `Idempotency-Key` is, and what a create sent again with one
//! gets ([`decide`], one table over what storage found under the key).

use crate::ValidationError;

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters (`!` to `~`), compared
/// exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key, in characters.
    pub const MAX_LEN: usize = 255;

    /// Checks `raw`.
    ///
    /// # Errors
    /// [`ValidationError::IdempotencyKey`] for an empty or too long key, or one holding a
    /// space, a control character or anything outside ASCII.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let visible = raw.bytes().all(|b| b.is_ascii_graphic());
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !visible {
            return Err(ValidationError::IdempotencyKey);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies a request under a key: SHA-256 of its method, path and canonical body,
/// computed by the adapter that read it. Two requests with one key and different
/// fingerprints are different requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The answer a create got, kept with its key to be answered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Its status (2xx: only successful creates are kept).
    pub status: u16,
    /// Its body, byte for byte.
    pub body: String,
    /// Its `Location` header, when it had one.
    pub location: Option<String>,
}

/// A key as storage keeps it: the request that first used it and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The first request's fingerprint.
    pub fingerprint: Fingerprint,
    /// Its answer.
    pub response: StoredResponse,
}

/// What storage found when it tried to store a new key with the tasks of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key was free (never used, or expired): it is stored now, with the tasks.
    Stored,
    /// An earlier request holds the key; nothing was stored.
    Held(IdempotencyRecord),
    /// Another request with the key is still being handled (its transaction has not ended);
    /// nothing was stored.
    InFlight,
}

/// What a create with a key gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyDecision {
    /// A new key: the create happened and its answer is the fresh one.
    Created,
    /// The same request again: the first answer, again, and nothing is created.
    Replay(StoredResponse),
    /// The key was used for a different request: refused (422 IDEMPOTENCY_KEY_REUSED).
    Reused,
    /// The first request with the key is still running: refused (409
    /// IDEMPOTENCY_KEY_IN_USE); the client tries again later.
    InUse,
}

/// The rule, one row per fact:
///
/// | storage found | same fingerprint | decision |
/// | --- | --- | --- |
/// | key stored now | - | [`IdempotencyDecision::Created`] |
/// | key held | yes | [`IdempotencyDecision::Replay`] of the stored answer |
/// | key held | no | [`IdempotencyDecision::Reused`] |
/// | key in flight | - | [`IdempotencyDecision::InUse`] |
pub fn decide(claim: KeyClaim, request: &Fingerprint) -> IdempotencyDecision {
    match claim {
        KeyClaim::Stored => IdempotencyDecision::Created,
        KeyClaim::Held(record) if record.fingerprint == *request => {
            IdempotencyDecision::Replay(record.response)
        }
        KeyClaim::Held(_) => IdempotencyDecision::Reused,
        KeyClaim::InFlight => IdempotencyDecision::InUse,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters() {
        for good in ["a", "!", "~", "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", &"k".repeat(255)] {
            assert_eq!(IdempotencyKey::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", " ", "a b", "tab\there", "é", "new\nline", "\u{7f}", &"k".repeat(256)] {
            assert_eq!(IdempotencyKey::parse(bad), Err(ValidationError::IdempotencyKey), "{bad:?}");
        }
    }

    #[test]
    fn the_decision_table() {
        let fingerprint = Fingerprint::from_bytes([1; 32]);
        let other = Fingerprint::from_bytes([2; 32]);
        let response =
            StoredResponse { status: 201, body: "{}".to_owned(), location: Some("/x".to_owned()) };
        let held = |fingerprint| {
            KeyClaim::Held(IdempotencyRecord { fingerprint, response: response.clone() })
        };
        let rows = [
            (KeyClaim::Stored, IdempotencyDecision::Created),
            (held(fingerprint), IdempotencyDecision::Replay(response.clone())),
            (held(other), IdempotencyDecision::Reused),
            (KeyClaim::InFlight, IdempotencyDecision::InUse),
        ];
        for (claim, expected) in rows {
            assert_eq!(decide(claim.clone(), &fingerprint), expected, "{claim:?}");
        }
    }
}
