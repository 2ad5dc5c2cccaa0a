//! The contract between the consumer runtime and a worker's business logic: what a handler is
//! given ([`Incoming`]), what it answers ([`Outcome`] or [`HandlerError`]), and nothing else.
//!
//! A handler never sees AMQP: it cannot ack, nack or publish to a retry queue. It only says
//! whether the message is done and, if not, whether trying again may help. The runtime turns
//! that answer into an ack, a retry or a dead letter ([`super::classify`]). A handler that
//! publishes messages of its own (the mapper's commands, the writers' outcomes) must wait for
//! their confirms before it returns `Ok`: the runtime acks right after.

use std::future::Future;
use std::time::Duration;

use crate::envelope::Envelope;

use super::disposition::DeadLetterKind;

/// One delivery, decoded.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub envelope: Envelope,
    /// The routing key the message was first published with (`hubspot.deal.propertyChange`,
    /// `erp.sync_deal`), even when it came back through a retry queue or a DLQ replay, whose hops
    /// change the AMQP routing key.
    pub routing_key: String,
    /// Deliveries through the retry ladder so far (`x-l2l-attempt`): 0 on the first delivery.
    /// Quick in-process retries do not count; broker redeliveries after a crash do not either.
    pub attempt: u32,
    /// The broker delivered this message before without an ack (a worker died holding it).
    pub redelivered: bool,
}

/// A handled message; every variant is acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The effect is durable.
    Done,
    /// Nothing to do (e.g. a deal that is not in the trigger stage).
    Ignored { reason: String },
    /// The effect was already applied (dedup key or the target's unique key said so).
    Duplicate,
}

impl Outcome {
    /// Label value of `l2l_messages_acked_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Whether trying the same message again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection trouble, timeouts, 429, 5xx: retry in-process, then through the ladder.
    Transient,
    /// A message a human must act on (bad mapping, 4xx contract error): dead-letter at once.
    Permanent,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        })
    }
}

/// A failed attempt. The class is decided by the handler, which knows the remote system's error
/// vocabulary (Frappe `exc_type`, HubSpot status codes); the runtime only acts on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class} error: {message}")]
pub struct HandlerError {
    pub class: ErrorClass,
    /// For the operator: it becomes the dead letter's `x-l2l-error`.
    pub message: String,
    /// The remote asked us to wait this long (HTTP `Retry-After`); replaces the next quick delay.
    pub retry_after: Option<Duration>,
}

impl HandlerError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// A worker's business logic. One instance serves every delivery, concurrently, so state lives
/// behind `&self` (clients, pools, Redis connections).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, msg: Incoming) -> impl Future<Output = Result<Outcome, HandlerError>> + Send;

    /// Called when the handler's answer parked `msg` in the dead-letter queue (its copy is
    /// confirmed there), before the original is acked: a handler whose failures someone must
    /// see (erp-writer tells HubSpot, through the mapper, that a deal's order failed) reports it
    /// here, waiting for its own confirms. Not called for messages the handler never saw
    /// (undecodable, unknown kind, poison). The default does nothing.
    fn dead_lettered(
        &self,
        msg: &Incoming,
        kind: DeadLetterKind,
        reason: &str,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, kind, reason);
        async {}
    }
}

/// A shared handler is a handler: tests and binaries keep an `Arc` to inspect or reuse it.
impl<H: Handler> Handler for std::sync::Arc<H> {
    fn handle(&self, msg: Incoming) -> impl Future<Output = Result<Outcome, HandlerError>> + Send {
        H::handle(self, msg)
    }

    fn dead_lettered(
        &self,
        msg: &Incoming,
        kind: DeadLetterKind,
        reason: &str,
    ) -> impl Future<Output = ()> + Send {
        H::dead_lettered(self, msg, kind, reason)
    }
}
