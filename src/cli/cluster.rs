//! `herald cluster join|status|leave`; `status` and `leave` reach the node over HTTP or HTTPS
//! (see [`super::remote`]).

use anyhow::Context;
use serde_json::Value;

use crate::config::{DEV_API_KEY, ServeArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start this node and join the cluster through a seed (takes every `serve` flag).
    Join(Box<ServeArgs>),
    /// Print the members table: id, addresses, state, connections, log position.
    Status(AdminArgs),
    /// Ask a node to leave gracefully: drain clients, announce the leave, exit.
    Leave(AdminArgs),
}

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub node: super::remote::NodeArgs,
    /// Print the JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Join(args) => {
            if args.seeds.is_empty() {
                anyhow::bail!("invalid seed: `cluster join` needs at least one --seed ADDR");
            }
            super::serve::run(*args).await
        }
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Leave(args) => leave(args).await,
    }
}

fn api_key() -> String {
    super::env_secret("HERALD_API_KEY").unwrap_or_else(|| DEV_API_KEY.to_string())
}

async fn status(args: AdminArgs) -> anyhow::Result<()> {
    let node = super::remote::Remote::new(&args.node)?;
    let response = node
        .send(node.get("/api/cluster").bearer_auth(api_key()))
        .await?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("invalid answer from {}", node.address()))?;
    if !status.is_success() {
        anyhow::bail!("refused ({status}): {body}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!("{}", render_table(&body));
    Ok(())
}

/// The members table of an `/api/cluster` answer.
pub fn render_table(body: &Value) -> String {
    let mut rows = vec![[
        "NODE".to_string(),
        "STATE".into(),
        "HTTP".into(),
        "GOSSIP".into(),
        "MESH".into(),
        "CONNS".into(),
        "USERS".into(),
        "LOG".into(),
        "LINK".into(),
    ]];
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for member in body["members"].as_array().into_iter().flatten() {
        let name = if member["is_self"].as_bool() == Some(true) {
            format!("{} *", text(&member["node_id"]))
        } else {
            text(&member["node_id"])
        };
        let link = if member["is_self"].as_bool() == Some(true) {
            "self"
        } else if member["linked"].as_bool() == Some(true) {
            "up"
        } else {
            "down"
        };
        rows.push([
            name,
            text(&member["state"]),
            text(&member["http_addr"]),
            text(&member["gossip_addr"]),
            text(&member["mesh_addr"]),
            member["connections"].to_string(),
            member["users"].to_string(),
            member["log_total"].to_string(),
            link.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn leave(args: AdminArgs) -> anyhow::Result<()> {
    let node = super::remote::Remote::new(&args.node)?;
    let response = node
        .send(node.post("/api/cluster/leave").bearer_auth(api_key()))
        .await?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("refused ({status}): {text}");
    }
    println!("{text}");
    Ok(())
}
