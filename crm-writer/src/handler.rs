//! The runtime handler: decode a `crm.update_company` / `crm.update_deal` command, hand it to the
//! batcher of its object type and answer when the HubSpot write carrying it is done.
//!
//! What is deliberately not here: the Redis lease and done markers other writers use (DESIGN §5).
//! Setting properties is idempotent — writing the same values twice changes nothing — so a
//! redelivered command is simply written again (or skipped by the ordering guard); the guard in
//! [`crate::ordering`] is what keeps replicas from racing on one object.

use shared::commands::UpdateCrmObject;
use shared::envelope::Kind;
use shared::hubspot::ObjectType;
use shared::runtime::{Handler, HandlerError, Incoming, Outcome};

use crate::coalesce::{Applied, Batcher};
use crate::metrics;

/// One batcher per object type crm-writer writes.
#[derive(Debug, Clone)]
pub struct CrmWriterHandler {
    companies: Batcher,
    deals: Batcher,
}

impl CrmWriterHandler {
    /// `companies` and `deals` must batch for [`ObjectType::Companies`] and [`ObjectType::Deals`].
    pub fn new(companies: Batcher, deals: Batcher) -> Self {
        Self { companies, deals }
    }

    async fn handle_message(&self, msg: Incoming) -> Result<Outcome, HandlerError> {
        let batcher = match &msg.envelope.kind {
            Kind::CrmUpdateCompany => &self.companies,
            Kind::CrmUpdateDeal => &self.deals,
            other => {
                return Err(HandlerError::permanent(format!(
                    "crm-writer does not handle {other} messages (routing key {}); check the bindings of the crm-writer queue",
                    msg.routing_key
                )));
            }
        };
        let command: UpdateCrmObject = msg.envelope.decode_payload().map_err(|e| {
            HandlerError::permanent(format!(
                "{} payload is not an UpdateCrmObject: {e}",
                msg.envelope.kind
            ))
        })?;
        let object_id = object_id(batcher.object_type(), &command.object_id)?;
        let ty = batcher.object_type().as_str();
        if command.properties.is_empty() {
            metrics::skipped(batcher.object_type(), "no_property");
            tracing::info!(
                object_type = ty,
                object_id,
                "skipped: the command sets no property"
            );
            return Ok(Outcome::Ignored {
                reason: "the command sets no property".into(),
            });
        }
        let properties: Vec<String> = command.properties.keys().cloned().collect();
        let source_modified = command.source_modified;
        // Inside the delivery's span: every line carries the deal's correlation ID.
        match batcher
            .submit(object_id.clone(), command.properties, source_modified)
            .await?
        {
            Applied::Written => {
                tracing::info!(object_type = ty, object_id, ?properties, %source_modified, "written to HubSpot");
                Ok(Outcome::Done)
            }
            Applied::Superseded(reason) => {
                metrics::skipped(batcher.object_type(), "superseded");
                tracing::info!(object_type = ty, object_id, ?properties, %source_modified, %reason, "skipped: superseded by a newer value");
                Ok(Outcome::Ignored { reason })
            }
        }
    }
}

impl Handler for CrmWriterHandler {
    fn handle(
        &self,
        msg: Incoming,
    ) -> impl std::future::Future<Output = Result<Outcome, HandlerError>> + Send {
        self.handle_message(msg)
    }
}

/// HubSpot object IDs are decimal numbers. Anything else would poison a whole batch (HubSpot
/// refuses the call), so it is refused here, and `007` becomes `7`, the form HubSpot answers with.
pub fn object_id(object_type: ObjectType, raw: &str) -> Result<String, HandlerError> {
    raw.trim()
        .parse::<u64>()
        .map(|n| n.to_string())
        .map_err(|_| {
            HandlerError::permanent(format!(
                "{raw:?} is not a HubSpot {} id (expected a decimal number)",
                crate::error::singular(object_type)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_canonical_decimal_numbers() {
        assert_eq!(
            object_id(ObjectType::Deals, "18204735012").as_deref(),
            Ok("18204735012")
        );
        assert_eq!(object_id(ObjectType::Deals, " 007 ").as_deref(), Ok("7"));
        for bad in ["", "abc", "-1", "1/../2", "12.5"] {
            let e = object_id(ObjectType::Companies, bad).expect_err(bad);
            assert!(!e.is_transient());
            assert!(e.message.contains("company"), "{}", e.message);
        }
    }
}
