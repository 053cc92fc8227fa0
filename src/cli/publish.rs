//! `herald publish`: publish one event through a node's HTTP API with the API key.

use anyhow::Context;

use crate::config::DEV_API_KEY;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[arg(long)]
    pub channel: String,
    /// The message type (`data.type`).
    #[arg(long = "type")]
    pub kind: String,
    /// The rest of the message, a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// Deliver only to these users; repeat for several.
    #[arg(long = "user")]
    pub users: Vec<String>,
    #[arg(long, env = "HERALD_HTTP", default_value = "127.0.0.1:8000")]
    pub http: String,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let mut data: serde_json::Value =
        serde_json::from_str(&args.data).context("invalid --data: not JSON")?;
    let object = data
        .as_object_mut()
        .context("invalid --data: must be a JSON object")?;
    object.insert("type".into(), serde_json::Value::String(args.kind));
    let mut body = serde_json::json!({ "channel": args.channel, "data": data });
    if !args.users.is_empty() {
        body["users"] = serde_json::json!(args.users);
    }
    let key = super::env_secret("HERALD_API_KEY").unwrap_or_else(|| DEV_API_KEY.to_string());
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/publish", args.http))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.http))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("publish refused ({status}): {text}");
    }
    println!("{text}");
    Ok(())
}
