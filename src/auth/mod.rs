//! Authentication: user JWTs (HS256) and the backend API key.
//!
//! Owns the claims format, minting tokens (for `herald token` and tests), verifying them, and
//! the role rules of DESIGN.md section 5. It knows nothing of HTTP: the API's extractors find
//! the token (header, `?token=`, cookie) and call [`Authenticator`].

mod claims;
mod permissions;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

pub use claims::{Claims, Role, User};
pub use permissions::{ChannelAccess, may_subscribe};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("invalid api key")]
    BadApiKey,
}

/// Verifies user tokens and the API key with the configured secrets.
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    api_key: String,
}

impl Authenticator {
    pub fn new(jwt_secret: &str, api_key: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        // `sub` is required by `Claims` itself: jsonwebtoken's own check of a required `sub`
        // accepts only strings, and the seeds' user ids are numbers.
        validation.set_required_spec_claims(&["exp"]);
        Self {
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            validation,
            api_key: api_key.to_string(),
        }
    }

    pub fn verify_user(&self, token: &str) -> Result<User, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        User::try_from(data.claims).map_err(|_| AuthError::Invalid)
    }

    /// Constant-time comparison of a presented API key.
    pub fn verify_api_key(&self, presented: &str) -> Result<(), AuthError> {
        let expected = self.api_key.as_bytes();
        let presented = presented.as_bytes();
        let mut difference = expected.len() ^ presented.len();
        for (index, byte) in expected.iter().enumerate() {
            difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
        }
        if difference == 0 && !expected.is_empty() {
            Ok(())
        } else {
            Err(AuthError::BadApiKey)
        }
    }

    /// Mints a token for `user` valid for `ttl`.
    pub fn mint(&self, user: &User, ttl: Duration) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(ttl)
            .as_secs();
        let claims = Claims::from_user(user, exp);
        // Encoding HS256 with a valid key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, roles: &[Role]) -> User {
        User {
            id: id.into(),
            name: format!("user{id}"),
            roles: roles.to_vec(),
            creator_id: None,
        }
    }

    #[test]
    fn mints_and_verifies() {
        let auth = Authenticator::new("s3cret", "key");
        let token = auth.mint(&user("7", &[Role::Admin]), Duration::from_secs(60));
        let verified = auth.verify_user(&token).unwrap();
        assert_eq!(verified.id, "7");
        assert!(verified.is_creator_or_admin());
    }

    #[test]
    fn refuses_other_secrets_garbage_and_expired_tokens() {
        let auth = Authenticator::new("s3cret", "key");
        let other = Authenticator::new("other", "key");
        let token = other.mint(&user("7", &[]), Duration::from_secs(60));
        assert_eq!(auth.verify_user(&token), Err(AuthError::Invalid));
        assert_eq!(auth.verify_user("nope"), Err(AuthError::Invalid));
        let claims = Claims::from_user(&user("7", &[]), 1_000);
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(auth.verify_user(&expired), Err(AuthError::Expired));
    }

    #[test]
    fn accepts_numeric_subjects_and_requires_one() {
        let auth = Authenticator::new("s3cret", "key");
        let key = EncodingKey::from_secret(b"s3cret");
        let header = Header::new(Algorithm::HS256);
        let numeric = serde_json::json!({ "sub": 42, "exp": u64::MAX / 2 });
        let token = jsonwebtoken::encode(&header, &numeric, &key).unwrap();
        assert_eq!(auth.verify_user(&token).unwrap().id, "42");
        let missing = serde_json::json!({ "exp": u64::MAX / 2 });
        let token = jsonwebtoken::encode(&header, &missing, &key).unwrap();
        assert_eq!(auth.verify_user(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn checks_api_keys() {
        let auth = Authenticator::new("s", "key-123");
        assert!(auth.verify_api_key("key-123").is_ok());
        assert!(auth.verify_api_key("key-124").is_err());
        assert!(auth.verify_api_key("").is_err());
        assert!(auth.verify_api_key("key-1234").is_err());
    }
}
