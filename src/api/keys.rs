//! `/api/keys`: API keys managed while the server runs (admin keys only;
//! `colloquy keys` does the same on a stopped server's storage folder).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::Caller;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::{ApiKey, KeyError};

/// The body of `POST /api/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1 to 64 characters, without control characters, not only spaces
    /// (`auth::check_name`).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Admin keys see every job and manage keys.
    #[serde(default)]
    pub admin: bool,
}

/// The body of `GET /api/keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub total: usize,
    pub keys: Vec<ApiKey>,
}

/// The body of `POST /api/keys`: the key's record and its token, shown
/// this once (only its SHA-256 is kept).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: ApiKey,
    /// The token to send as `Authorization: Bearer <key>`.
    pub key: String,
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
#[utoipa::path(
    get,
    path = "/api/keys",
    operation_id = "list_keys",
    tag = "keys",
    summary = "Every API key (admin only; never a token)",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 403, description = "Not an admin key (or, as on every route, a foreign Host or a cross-site write)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    admin_only(&caller)?;
    let keys = state.keys.clone();
    let keys = web::block(move || keys.list())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let keys: Vec<_> = keys.iter().map(|k| k.public()).collect();
    Ok(HttpResponse::Ok().json(KeyList {
        total: keys.len(),
        keys,
    }))
}

/// `POST /api/keys` with `{"name": "...", "admin": false}`: 201 with the
/// key's record and, once, its token in `key`.
#[utoipa::path(
    post,
    path = "/api/keys",
    operation_id = "create_key",
    tag = "keys",
    summary = "Create an API key (admin only)",
    request_body = NewKey,
    responses(
        (status = 201, description = "Created: the token is in `key`, shown this once", body = CreatedKey),
        (status = 400, description = "A bad JSON body or key name", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 403, description = "Not an admin key (or, as on every route, a foreign Host or a cross-site write)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
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
    Ok(HttpResponse::Created().json(CreatedKey {
        record: key.public(),
        key: token,
    }))
}

/// `DELETE /api/keys/{id}`: revokes the key at once.
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    operation_id = "revoke_key",
    tag = "keys",
    summary = "Revoke an API key at once (admin only)",
    params(("id" = String, Path, description = "The key's id (`key_` and 12 hex digits), or its name when only one live key has it")),
    responses(
        (status = 200, description = "Revoked: the key's record", body = ApiKey),
        (status = 400, description = "More than one live key has that name", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 403, description = "Not an admin key (or, as on every route, a foreign Host or a cross-site write)", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
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
