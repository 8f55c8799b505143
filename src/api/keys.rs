//! `/api/keys`: API keys managed while the server runs (admin keys only;
//! `colloquy keys` does the same on a stopped server's storage folder).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::access::Caller;
use super::error::ApiError;
use super::AppState;
use crate::auth::KeyError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only an admin key manages keys".into()))
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// `GET /api/keys`: every key (never a token or hash).
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    admin_only(&caller)?;
    let keys = state.keys.clone();
    let keys = web::block(move || keys.list())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let keys: Vec<_> = keys.iter().map(|k| k.public()).collect();
    Ok(HttpResponse::Ok().json(json!({ "total": keys.len(), "keys": keys })))
}

/// `POST /api/keys` with `{"name": "...", "admin": false}`: 201 with the
/// key's record and, once, its token in `key`.
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&caller)?;
    let keys = state.keys.clone();
    let NewKey { name, admin } = body.into_inner();
    let (key, token) = web::block(move || keys.create(&name, admin))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(key_id = %key.id, name = %key.name, admin = key.admin, "API key created");
    let mut body = serde_json::to_value(key.public()).unwrap_or_default();
    body["key"] = json!(token);
    Ok(HttpResponse::Created().json(body))
}

/// `DELETE /api/keys/{id}`: revokes the key at once.
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&caller)?;
    let keys = state.keys.clone();
    let id = path.into_inner();
    let key = web::block(move || keys.revoke(&id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
        .ok_or(ApiError::NotFound)?;
    tracing::info!(key_id = %key.id, "API key revoked");
    Ok(HttpResponse::Ok().json(key.public()))
}
