//! Request extractors: the signed-in user (bearer header, `?token=`, or cookie
//! `herald_token`), the backend API key, "either", and JSON bodies that must be objects.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::auth::{AuthError, User};

/// A verified user.
pub struct AuthUser(pub User);

/// A request carrying the backend API key.
pub struct ApiKey;

/// A backend (API key) or a user.
pub enum Caller {
    Backend,
    User(User),
}

/// A JSON body that must be an object. (`axum::Json` of a struct also takes an array, field by
/// field in declaration order: `["hi"]` would be `{"message":"hi"}`.)
pub struct JsonObject<T>(pub T);

/// The user token of a request, from the places DESIGN.md section 5 lists, in that order.
pub fn find_user_token(parts: &Parts) -> Option<String> {
    if let Some(token) = bearer(parts) {
        return Some(token.to_string());
    }
    if let Some(query) = parts.uri.query() {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == "token" && !value.is_empty() {
                return Some(value.into_owned());
            }
        }
    }
    for cookies in parts.headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for cookie in cookies.split(';') {
            if let Some((name, value)) = cookie.trim().split_once('=') {
                if name == "herald_token" && !value.is_empty() {
                    return Some(value.to_string());
                }
            }
        }
    }
    None
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = find_user_token(parts).ok_or(AuthError::Missing)?;
        Ok(Self(state.auth.verify_user(&token)?))
    }
}

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or(AuthError::Missing)?;
        state.auth.verify_api_key(key)?;
        Ok(Self)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = bearer(parts) {
            if state.auth.verify_api_key(key).is_ok() {
                return Ok(Self::Backend);
            }
        }
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        Ok(Self::User(user))
    }
}

impl<S, T> FromRequest<S> for JsonObject<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Checked as JSON without building a tree, then read straight into `T`.
        let Json(raw) =
            Json::<Box<serde_json::value::RawValue>>::from_request(request, state).await?;
        if !raw.get().starts_with('{') {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        serde_json::from_str(raw.get())
            .map(Self)
            .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = axum::http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn finds_tokens_in_header_query_and_cookie() {
        assert_eq!(
            find_user_token(&parts("/x", &[("authorization", "Bearer abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            find_user_token(&parts("/x?a=1&token=q%2Ey", &[])).as_deref(),
            Some("q.y")
        );
        assert_eq!(
            find_user_token(&parts("/x", &[("cookie", "a=b; herald_token=ck")])).as_deref(),
            Some("ck")
        );
        assert_eq!(find_user_token(&parts("/x?token=", &[])), None);
    }
}
