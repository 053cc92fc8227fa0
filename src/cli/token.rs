//! `herald token`: mint a user JWT with the configured secret.

use std::time::Duration;

use crate::auth::{Authenticator, Role, User};
use crate::config::DEV_JWT_SECRET;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The username (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// A role; repeat for several.
    #[arg(long = "role", value_enum)]
    pub roles: Vec<Role>,
    /// For team members: their creator's id.
    #[arg(long)]
    pub creator_id: Option<String>,
    /// Lifetime, for example 1h or 30m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    if args.sub.is_empty() || args.sub.len() > 128 {
        anyhow::bail!("invalid --sub: must be 1 to 128 characters");
    }
    let secret =
        super::env_secret("HERALD_JWT_SECRET").unwrap_or_else(|| DEV_JWT_SECRET.to_string());
    let auth = Authenticator::new(&secret, "unused-api-key");
    let user = User {
        name: args.name.unwrap_or_else(|| args.sub.clone()),
        id: args.sub,
        roles: args.roles,
        creator_id: args.creator_id,
    };
    println!("{}", auth.mint(&user, args.ttl));
    Ok(())
}
