//! JWT claims and the authenticated user.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Creator,
    Team,
    Admin,
}

/// Claims as signed: `sub` may be a string or a number (the seeds' user ids are integers).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: SubjectId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<SubjectId>,
    pub exp: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubjectId {
    Text(String),
    Number(u64),
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Number(number) => write!(f, "{number}"),
        }
    }
}

/// A verified user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub creator_id: Option<String>,
}

impl User {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_creator_or_admin(&self) -> bool {
        self.has_role(Role::Creator) || self.has_role(Role::Admin)
    }

    /// Creators, their team members and admins: may moderate (for example delete comments).
    pub fn is_staff(&self) -> bool {
        self.is_creator_or_admin() || self.has_role(Role::Team)
    }
}

impl Claims {
    pub fn from_user(user: &User, exp: u64) -> Self {
        Self {
            sub: SubjectId::Text(user.id.clone()),
            name: Some(user.name.clone()),
            roles: user.roles.clone(),
            creator_id: user.creator_id.clone().map(SubjectId::Text),
            exp,
        }
    }
}

impl TryFrom<Claims> for User {
    type Error = ();
    fn try_from(claims: Claims) -> Result<Self, ()> {
        let id = claims.sub.to_string();
        if id.is_empty() || id.len() > 128 {
            return Err(());
        }
        Ok(Self {
            name: claims
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.clone()),
            id,
            roles: claims.roles,
            creator_id: claims.creator_id.map(|c| c.to_string()),
        })
    }
}
