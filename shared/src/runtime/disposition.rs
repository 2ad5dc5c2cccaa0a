//! What happens to a delivery once its handler has answered: the one mapping from a handler's
//! result to an AMQP action (STYLE "Errors"), pure so every branch is unit-tested.
//!
//! Quick in-process retries are not modelled here: they happen before [`classify`] is asked, and
//! `classify` sees the last result of a delivery. Undecodable bodies, unknown kinds and handler
//! panics never reach a handler result; the consumer decides those directly (see
//! [`super::consumer`]).

use std::str::FromStr;

use super::handler::{ErrorClass, HandlerError, Outcome};

/// The AMQP action for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done, ignored or duplicate: ack.
    Ack,
    /// Publish to retry tier `tier` (index into `worker.retry_tiers`) with a confirm, then ack.
    RetryLater { tier: usize },
    /// Publish to `<q>.dlq` with a confirm, then ack.
    DeadLetter {
        kind: DeadLetterKind,
        reason: String,
    },
}

/// Why a message is in the DLQ; the value of `x-l2l-error-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterKind {
    /// The handler said a human must act (bad mapping, contract error).
    Permanent,
    /// Transient failures outlasted the whole retry ladder.
    Exhausted,
    /// Redelivered beyond the work queue's `x-delivery-limit` without an ack: the worker crashed
    /// or panicked on it. The broker dead-letters these itself, so they carry `x-death` instead of
    /// `x-l2l-error-kind`.
    Poison,
    /// The envelope's kind is not one this build knows (a newer producer).
    UnknownKind,
    /// The body is not an envelope at all.
    Undecodable,
}

impl DeadLetterKind {
    pub const ALL: [DeadLetterKind; 5] = [
        DeadLetterKind::Permanent,
        DeadLetterKind::Exhausted,
        DeadLetterKind::Poison,
        DeadLetterKind::UnknownKind,
        DeadLetterKind::Undecodable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Permanent => "permanent",
            DeadLetterKind::Exhausted => "exhausted",
            DeadLetterKind::Poison => "poison",
            DeadLetterKind::UnknownKind => "unknown-kind",
            DeadLetterKind::Undecodable => "undecodable",
        }
    }
}

impl std::fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown dead-letter kind {0:?} (expected permanent, exhausted, poison, unknown-kind or undecodable)"
)]
pub struct UnknownDeadLetterKind(pub String);

impl FromStr for DeadLetterKind {
    type Err = UnknownDeadLetterKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadLetterKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownDeadLetterKind(s.to_string()))
    }
}

/// Map the last result of a delivery to its disposition.
///
/// `attempt` is the delivery's `x-l2l-attempt` (0 on the first delivery), `tiers` the length of
/// the retry ladder. A transient failure on attempt `n < tiers` goes to tier `n`; on attempt
/// `tiers` the ladder is used up and the message is dead-lettered as `exhausted`.
pub fn classify(result: &Result<Outcome, HandlerError>, attempt: u32, tiers: usize) -> Disposition {
    match result {
        Ok(_) => Disposition::Ack,
        Err(e) => match e.class {
            ErrorClass::Permanent => Disposition::DeadLetter {
                kind: DeadLetterKind::Permanent,
                reason: e.message.clone(),
            },
            ErrorClass::Transient => {
                let attempt = attempt as usize;
                if attempt < tiers {
                    Disposition::RetryLater { tier: attempt }
                } else {
                    Disposition::DeadLetter {
                        kind: DeadLetterKind::Exhausted,
                        reason: e.message.clone(),
                    }
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_outcome_is_acked() {
        for outcome in [
            Outcome::Done,
            Outcome::Duplicate,
            Outcome::Ignored {
                reason: "not won".into(),
            },
        ] {
            assert_eq!(classify(&Ok(outcome), 0, 4), Disposition::Ack);
        }
        // Even past the ladder and without one: success is success.
        assert_eq!(classify(&Ok(Outcome::Done), 9, 0), Disposition::Ack);
    }

    #[test]
    fn permanent_errors_dead_letter_at_once_whatever_the_attempt() {
        for attempt in [0, 1, 4, 100] {
            let d = classify(
                &Err(HandlerError::permanent("SKU 'W-9' has no Item")),
                attempt,
                4,
            );
            assert_eq!(
                d,
                Disposition::DeadLetter {
                    kind: DeadLetterKind::Permanent,
                    reason: "SKU 'W-9' has no Item".into()
                }
            );
        }
    }

    #[test]
    fn transient_errors_climb_the_ladder_then_exhaust() {
        let err = Err(HandlerError::transient("503").with_retry_after(Duration::from_secs(1)));
        assert_eq!(classify(&err, 0, 4), Disposition::RetryLater { tier: 0 });
        assert_eq!(classify(&err, 1, 4), Disposition::RetryLater { tier: 1 });
        assert_eq!(classify(&err, 3, 4), Disposition::RetryLater { tier: 3 });
        assert_eq!(
            classify(&err, 4, 4),
            Disposition::DeadLetter {
                kind: DeadLetterKind::Exhausted,
                reason: "503".into()
            }
        );
        assert!(matches!(
            classify(&err, 7, 4),
            Disposition::DeadLetter {
                kind: DeadLetterKind::Exhausted,
                ..
            }
        ));
    }

    #[test]
    fn no_ladder_means_exhausted_on_first_transient_failure() {
        assert!(matches!(
            classify(&Err(HandlerError::transient("timeout")), 0, 0),
            Disposition::DeadLetter {
                kind: DeadLetterKind::Exhausted,
                ..
            }
        ));
    }

    #[test]
    fn dead_letter_kinds_roundtrip_their_header_values() {
        for k in DeadLetterKind::ALL {
            assert_eq!(k.as_str().parse::<DeadLetterKind>().ok(), Some(k));
            assert_eq!(
                serde_json::to_value(k).ok(),
                Some(serde_json::json!(k.as_str()))
            );
        }
        assert_eq!(DeadLetterKind::UnknownKind.as_str(), "unknown-kind");
        assert!("exploded".parse::<DeadLetterKind>().is_err());
    }
}
