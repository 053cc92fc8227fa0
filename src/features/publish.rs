//! Publishing one event: validate, commit to the log (which dispatches it locally and hands it
//! to the backplane), and answer with its identity and cursor. [`publish_many`] commits several
//! in one transaction (a batch, a publish to several channels), all of them or none.
//!
//! With `replication = 2` the answer waits for another node to report storing the event, at
//! most [`REPLICATION_TIMEOUT`], and not at all when no peer link is up (a partition, a lone
//! node). `"replicated"` is true only when a peer confirmed: a cut-off node answers `false`
//! (its event is committed locally and reaches the others once the network heals), never a
//! replication that did not happen.

use serde::Serialize;

use crate::api::{ApiError, AppState};
use std::sync::Arc;

use crate::event::{ChannelName, Cursor, Event, EventDraft, Hlc};

/// How long a `replication = 2` publish waits for another node to store the event.
pub const REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Times one publish request (`POST /api/publish`, `POST /api/batch`) from its handler's start
/// to its answer, into `herald_publish_duration_seconds` when dropped: errors are timed too,
/// and so is a request whose client went away meanwhile.
pub(crate) struct PublishTimer(std::time::Instant);

impl PublishTimer {
    pub(crate) fn start() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Drop for PublishTimer {
    fn drop(&mut self) {
        metrics::histogram!(crate::telemetry::catalog::PUBLISH_DURATION)
            .record(self.0.elapsed().as_secs_f64());
    }
}

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
            idempotency_key: None,
        })
        .await?;
    metrics::counter!("herald_publishes_total").increment(1);
    let replicated =
        state.config.replication >= 2 && confirm_replicated(state, appended.event.seq).await;
    Ok(Published {
        id: appended.event.id.to_string(),
        cursor: Cursor::encode(&appended.position),
        replicated,
    })
}

/// One event of [`publish_many`]'s answer.
#[derive(Debug, Serialize)]
pub struct PublishedEvent {
    pub id: String,
    pub cursor: String,
    /// True when its idempotency key named an event held already: nothing new was published.
    pub replayed: bool,
}

/// What [`publish_many`] answers: one entry per draft, in order.
#[derive(Debug)]
pub struct PublishedMany {
    pub events: Vec<PublishedEvent>,
    /// True when another node confirmed storing the newest of this node's events among them
    /// (with `replication = 2`), or when every one of them was first published by another node.
    pub replicated: bool,
}

impl PublishedMany {
    /// The JSON answer: `{status, events: [{channel?, id, cursor, replayed?}, ...], replicated}`
    /// in order, each event named with its channel when `channels` are given.
    pub fn answer(self, channels: Option<&[ChannelName]>) -> ManyAnswer {
        let events = self
            .events
            .into_iter()
            .enumerate()
            .map(|(index, event)| EventAnswer {
                channel: channels
                    .and_then(|channels| channels.get(index))
                    .map(|channel| channel.as_str().to_string()),
                cursor: event.cursor,
                id: event.id,
                replayed: event.replayed,
            })
            .collect();
        ManyAnswer {
            events,
            replicated: self.replicated,
            status: "success",
        }
    }
}

/// The answer to a publish of several events (`POST /api/batch`, `POST /api/publish` with
/// `channels`), fields in the order of the other JSON answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ManyAnswer {
    /// One per event, in the order given.
    pub events: Vec<EventAnswer>,
    /// True when another node confirmed storing the newest of them (`replication = 2`), or
    /// when every one was first published by another node.
    pub replicated: bool,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}

/// One event of a [`ManyAnswer`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventAnswer {
    /// The event's channel, for a publish to several channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub channel: Option<String>,
    /// Covers this event and every event before it in the request.
    pub cursor: String,
    pub id: String,
    /// Present (true) when its idempotency key named an event held already: nothing new was
    /// published, and `id` and `cursor` are the first publish's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// Commits `drafts` in one transaction, all or none (see [`crate::store::Store::append_many`]
/// for idempotency keys), and answers each one's id and the cursor that covers it.
pub async fn publish_many(
    state: &AppState,
    drafts: Vec<EventDraft>,
) -> Result<PublishedMany, PublishError> {
    let appended = state.store.append_many(drafts).await?;
    let own = state.store.origin();
    let fresh = appended.iter().filter(|a| !a.replayed).count();
    metrics::counter!("herald_publishes_total").increment(fresh as u64);
    metrics::counter!("herald_publishes_replayed_total").increment((appended.len() - fresh) as u64);
    let newest_own = appended
        .iter()
        .filter(|a| &a.event.origin == own)
        .map(|a| a.event.seq)
        .max();
    let replicated = match newest_own {
        None => true,
        Some(seq) => state.config.replication >= 2 && confirm_replicated(state, seq).await,
    };
    let events = appended
        .into_iter()
        .map(|a| PublishedEvent {
            id: a.event.id.to_string(),
            cursor: Cursor::encode(&a.position),
            replayed: a.replayed,
        })
        .collect();
    Ok(PublishedMany { events, replicated })
}

/// Waits until another node reports storing this node's event `seq`. With no linked peer it
/// answers false at once (the publish degrades to a local commit and says so).
async fn confirm_replicated(state: &AppState, seq: u64) -> bool {
    if state.backplane.linked_peers() == 0 {
        return false;
    }
    let Some(mut acked) = state.backplane.replication_watch() else {
        return false;
    };
    let waited =
        tokio::time::timeout(REPLICATION_TIMEOUT, acked.wait_for(|acked| *acked >= seq)).await;
    let confirmed = matches!(waited, Ok(Ok(_)));
    if !confirmed {
        metrics::counter!("herald_replication_timeouts_total").increment(1);
    }
    confirmed
}

/// Delivers an ephemeral event (a typing indicator) to local subscribers and, best effort, to
/// the other nodes. It is never stored, never replayed, and has no seq.
pub fn publish_ephemeral(state: &AppState, channel: ChannelName, kind: &str, payload: String) {
    let event = Arc::new(Event {
        origin: state.store.origin().clone(),
        seq: 0,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc::default(),
        channel,
        kind: kind.to_string(),
        payload,
        users: None,
        ephemeral: true,
        idempotency_key: None,
    });
    let events = [event];
    state.hub.dispatch(&events);
    state.backplane.ship_ephemeral(&events);
    metrics::counter!("herald_ephemeral_events_total").increment(1);
}
