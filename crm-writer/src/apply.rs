//! One flushed batch → HubSpot calls, with a result per object (DESIGN §4, §6).
//!
//! - One object: `PATCH /crm/v3/objects/{type}/{id}`; two or more: `batch/update` (the caller
//!   never passes more than 100). Both cost one request of the shared budget; the client waits
//!   for the budget, honours 429s (penalizing the shared bucket) and retries 5xx/timeouts.
//! - A 207 partial answer: the objects in `results` are done. Every other input is retried
//!   **alone** with PATCH, so its failure is its own, definitive HubSpot error — a 404 with
//!   HubSpot's message and `correlationId` for a deleted deal — and only the messages of that
//!   object fail. This costs one extra request per failed object, which is rare.
//! - The whole batch refused with a 4xx (one bad value makes HubSpot reject all 100 inputs):
//!   split in halves and try each (bisection), down to single PATCHes, so one bad object costs
//!   about `2·log2(n)` calls instead of failing its 99 neighbours.
//! - Transient failures of a whole batch (after the client's own retries) and 401/403 fail every
//!   object of the call alike: the first retries, the second is a configuration problem that
//!   bisection cannot fix.

use std::collections::{BTreeMap, HashSet};

use shared::hubspot::types::BatchUpdateInput;
use shared::hubspot::{ErrorKind, HubSpotClient, ObjectType};
use shared::runtime::HandlerError;

use crate::error::classify;
use crate::metrics;

/// The result of writing one object.
pub type ObjectResult = (String, Result<(), HandlerError>);

/// Write every input (distinct ids, at most 100); one result per input, in no particular order.
pub async fn write(
    client: &HubSpotClient,
    object_type: ObjectType,
    inputs: Vec<BatchUpdateInput>,
) -> Vec<ObjectResult> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut groups = vec![inputs];
    while let Some(mut group) = groups.pop() {
        if group.len() <= 1 {
            if let Some(input) = group.pop() {
                metrics::call(object_type, 1);
                out.push(patch(client, object_type, input).await);
            }
            continue;
        }
        metrics::call(object_type, group.len());
        match client.batch_update(object_type, &group).await {
            Ok(written) => {
                let done: HashSet<&str> = written.objects.iter().map(|o| o.id.as_str()).collect();
                let (ok, failed): (Vec<_>, Vec<_>) = group
                    .into_iter()
                    .partition(|i| done.contains(i.id.as_str()));
                out.extend(ok.into_iter().map(|i| (i.id, Ok(()))));
                if !failed.is_empty() {
                    tracing::info!(
                        object_type = object_type.as_str(),
                        failed = failed.len(),
                        errors = ?written.errors.iter().map(|e| (&e.category, &e.message)).collect::<Vec<_>>(),
                        "batch update partly failed; retrying the failed objects alone"
                    );
                    metrics::isolated(object_type, failed.len());
                    for input in failed {
                        out.push(patch(client, object_type, input).await);
                    }
                }
            }
            Err(e) if e.is_transient() || matches!(e.kind, ErrorKind::Auth | ErrorKind::Decode) => {
                tracing::warn!(object_type = object_type.as_str(), objects = group.len(), error = %e, "batch update failed");
                out.extend(group.into_iter().map(|i| {
                    let err = classify(object_type, &i.id, &e);
                    (i.id, Err(err))
                }));
            }
            Err(e) => {
                tracing::info!(object_type = object_type.as_str(), objects = group.len(), error = %e, "batch update refused; bisecting to find the objects at fault");
                metrics::bisected(object_type);
                let right = group.split_off(group.len() / 2);
                groups.push(right);
                groups.push(group);
            }
        }
    }
    out
}

async fn patch(
    client: &HubSpotClient,
    object_type: ObjectType,
    input: BatchUpdateInput,
) -> ObjectResult {
    let properties: BTreeMap<String, String> = input.properties;
    match client.update(object_type, &input.id, &properties).await {
        Ok(_) => (input.id, Ok(())),
        Err(e) => {
            let err = classify(object_type, &input.id, &e);
            (input.id, Err(err))
        }
    }
}
