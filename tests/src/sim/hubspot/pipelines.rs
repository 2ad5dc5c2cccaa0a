//! `GET /crm/v3/pipelines/deals` (README §7): HubSpot's default sales pipeline with its seven
//! stages, plus one custom pipeline whose stage ids are numeric strings — a client has to find its
//! "won" stage by `metadata.probability == "1.0"` and `isClosed`, not by the literal `closedwon`.

use axum::Json;
use axum::extract::Path;
use serde_json::{Value, json};

use super::error::ApiError;
use super::model::ObjectType;
use super::objects::object_type;

fn stage(id: &str, label: &str, order: u32, closed: bool, probability: &str) -> Value {
    json!({
        "id": id,
        "label": label,
        "displayOrder": order,
        "metadata": { "isClosed": closed.to_string(), "probability": probability },
        "archived": false,
        "createdAt": "2020-01-01T00:00:00Z",
        "updatedAt": "2020-01-01T00:00:00Z",
        "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
    })
}

fn pipeline(id: &str, label: &str, order: u32, stages: Vec<Value>) -> Value {
    json!({
        "id": id,
        "label": label,
        "displayOrder": order,
        "archived": false,
        "createdAt": "2020-01-01T00:00:00Z",
        "updatedAt": "2024-06-01T00:00:00Z",
        "stages": stages,
    })
}

/// The deal pipelines of every simulated portal.
pub fn deal_pipelines() -> Value {
    let default = pipeline(
        "default",
        "Sales Pipeline",
        0,
        vec![
            stage(
                "appointmentscheduled",
                "Appointment Scheduled",
                0,
                false,
                "0.2",
            ),
            stage("qualifiedtobuy", "Qualified To Buy", 1, false, "0.4"),
            stage(
                "presentationscheduled",
                "Presentation Scheduled",
                2,
                false,
                "0.6",
            ),
            stage(
                "decisionmakerboughtin",
                "Decision Maker Bought-In",
                3,
                false,
                "0.8",
            ),
            stage("contractsent", "Contract Sent", 4, false, "0.9"),
            stage("closedwon", "Closed Won", 5, true, "1.0"),
            stage("closedlost", "Closed Lost", 6, true, "0.0"),
        ],
    );
    let partner = pipeline(
        "2001",
        "Partner Pipeline",
        1,
        vec![
            stage("2001001", "Lead", 0, false, "0.1"),
            stage("2001002", "Negotiation", 1, false, "0.5"),
            stage("2001003", "Signed", 2, true, "1.0"),
            stage("2001004", "Lost", 3, true, "0.0"),
        ],
    );
    json!({ "results": [default, partner] })
}

/// `GET /crm/v3/pipelines/{objectType}`: deals have pipelines; the other types answer none.
pub async fn list(Path(ty): Path<String>) -> Result<Json<Value>, ApiError> {
    match object_type(&ty)? {
        ObjectType::Deals => Ok(Json(deal_pipelines())),
        _ => Ok(Json(json!({ "results": [] }))),
    }
}
