//! `herald publish`: publish through a node's HTTP API with the API key (HTTPS to
//! `--http https://host:port`, see [`super::remote`]).
//!
//! - one event: `--channel C --type T --data JSON` (`POST /api/publish`);
//! - one payload on several channels: `--channel` repeated (`POST /api/publish` with
//!   `channels`, one transaction);
//! - a batch: `--batch` reads NDJSON from stdin, one event a line, each
//!   `{"channel":..,"data":{"type":..},"users"?:[..],"idempotency_key"?:".."}`, and sends them
//!   through `POST /api/batch`, `--batch-size` (default 1,000, the server's default
//!   `limits.max_batch`) per request, printing each answer.
//!
//! `--idempotency-key K` names a single or multi-channel publish, so that running the same
//! command again after a timeout publishes nothing new and prints the first answer.

use std::io::BufRead;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::remote::Remote;
use crate::config::DEV_API_KEY;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The channel; repeat to publish the same data on several channels in one commit.
    #[arg(long, required_unless_present = "batch")]
    pub channel: Vec<String>,
    /// The message type (`data.type`).
    #[arg(long = "type", required_unless_present = "batch")]
    pub kind: Option<String>,
    /// The rest of the message, a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// Deliver only to these users; repeat for several.
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// A retry with the same key (on the same channel) publishes nothing new.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Read events from stdin, one JSON object a line, and publish them with POST /api/batch.
    #[arg(long, conflicts_with_all = ["channel", "kind", "users", "idempotency_key"])]
    pub batch: bool,
    /// Events per batch request (at most the server's limits.max_batch).
    #[arg(long, default_value_t = 1_000, requires = "batch")]
    pub batch_size: usize,
    #[command(flatten)]
    pub node: super::remote::NodeArgs,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let key = super::env_secret("HERALD_API_KEY").unwrap_or_else(|| DEV_API_KEY.to_string());
    let node = Remote::new(&args.node)?;
    if args.batch {
        return run_batch(&node, &args, &key).await;
    }
    let body = publish_body(&args)?;
    let text = post(&node, "/api/publish", &key, &body).await?;
    println!("{text}");
    Ok(())
}

/// The body of `POST /api/publish` for one channel or several.
fn publish_body(args: &PublishArgs) -> anyhow::Result<Value> {
    let mut data: Value = serde_json::from_str(&args.data).context("invalid --data: not JSON")?;
    let object = data
        .as_object_mut()
        .context("invalid --data: must be a JSON object")?;
    let kind = args.kind.clone().context("--type is required")?;
    object.insert("type".into(), Value::String(kind));
    let mut body = match args.channel.as_slice() {
        [] => bail!("--channel is required"),
        [channel] => json!({ "channel": channel, "data": data }),
        channels => json!({ "channels": channels, "data": data }),
    };
    if !args.users.is_empty() {
        body["users"] = json!(args.users);
    }
    if let Some(key) = &args.idempotency_key {
        body["idempotency_key"] = json!(key);
    }
    Ok(body)
}

async fn run_batch(node: &Remote, args: &PublishArgs, key: &str) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    let stdin = std::io::stdin();
    let mut events = Vec::with_capacity(args.batch_size.min(10_000));
    for (number, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not JSON", number + 1))?;
        if !event.is_object() {
            bail!("line {}: an event must be a JSON object", number + 1);
        }
        events.push(event);
        if events.len() == args.batch_size {
            send_batch(node, key, &mut events).await?;
        }
    }
    if !events.is_empty() {
        send_batch(node, key, &mut events).await?;
    }
    Ok(())
}

async fn send_batch(node: &Remote, key: &str, events: &mut Vec<Value>) -> anyhow::Result<()> {
    let body = json!({ "events": std::mem::take(events) });
    let text = post(node, "/api/batch", key, &body).await?;
    println!("{text}");
    Ok(())
}

async fn post(node: &Remote, path: &str, key: &str, body: &Value) -> anyhow::Result<String> {
    let response = node
        .send(node.post(path).bearer_auth(key).json(body))
        .await?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("publish refused ({status}): {text}");
    }
    Ok(text)
}
