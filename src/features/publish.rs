//! Publishing one event: validate, commit to the log (which dispatches it locally and hands it
//! to the backplane), and answer with its identity and cursor.

use serde::Serialize;

use crate::api::{ApiError, AppState};
use crate::event::{ChannelName, Cursor, EventDraft};

#[derive(Debug, Serialize)]
pub struct Published {
    pub id: String,
    pub cursor: String,
    /// True when another node confirmed storing the event before this answer.
    pub replicated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("store unavailable")]
    Store(#[from] crate::store::StoreError),
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Store(store) => store.into(),
        }
    }
}

/// Commits `payload` (a JSON object with a string `type`) on `channel`.
pub async fn publish(
    state: &AppState,
    channel: ChannelName,
    kind: &str,
    payload: String,
    users: Option<Vec<String>>,
) -> Result<Published, PublishError> {
    let appended = state
        .store
        .append(EventDraft {
            channel,
            kind: kind.to_string(),
            payload,
            users,
        })
        .await?;
    metrics::counter!("herald_publishes_total").increment(1);
    Ok(Published {
        id: appended.event.id.to_string(),
        cursor: Cursor::encode(&appended.position),
        replicated: false,
    })
}
