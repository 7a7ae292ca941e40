//! Authentication and authorization: API keys (three headers), HS256 JWTs, scopes.
//!
//! Keys look like `bt_` + 40 url-safe characters. Only their SHA-256 is stored; a presented
//! key is hashed, looked up, and the stored hash compared in constant time.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use baton_actors::model::{now, ApiKey, KeyId, StoredKey, TenantId};
use baton_actors::store::{CommitTicket, Store, StoreError};
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;
use crate::ratelimit::Caller;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    ConversationsRead,
    ConversationsWrite,
    ChatbotConfig,
    MessagesHandle,
    Transfers,
}

impl Scope {
    /// Every native scope.
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::ConversationsRead,
        Scope::ConversationsWrite,
        Scope::ChatbotConfig,
        Scope::MessagesHandle,
        Scope::Transfers,
    ];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ConversationsRead => "conversations:read",
            Scope::ConversationsWrite => "conversations:write",
            Scope::ChatbotConfig => "chatbot:config",
            Scope::MessagesHandle => "messages:handle",
            Scope::Transfers => "transfers",
        }
    }

    /// A native scope name or one of the seed permission aliases.
    pub fn parse(name: &str) -> Option<Scope> {
        Some(match name {
            "admin" => Scope::Admin,
            "conversations:read" | "chatbots.conversations.list" | "chatbots.conversations.get" => {
                Scope::ConversationsRead
            }
            "conversations:write" | "chatbots.conversations.create" | "chatbots.conversations.edit" => {
                Scope::ConversationsWrite
            }
            "chatbot:config" => Scope::ChatbotConfig,
            "messages:handle"
            | "chatbots.messages.handle"
            | "chatbots.events.handle"
            | "chatbots.step-payload.handle" => Scope::MessagesHandle,
            "transfers" => Scope::Transfers,
            _ => return None,
        })
    }
}

/// Validates a list of scope names (400 naming the first unknown one).
pub fn parse_scopes(field: &str, names: &[String]) -> Result<Vec<Scope>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request(field, format!("{field} must list at least one scope")));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Scope::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_request(
                    format!("{field}[{i}]"),
                    format!("unknown scope {name:?}; known scopes: {}", known.join(", ")),
                )
            })
        })
        .collect()
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: TenantId,
    /// The key used, when it was an API key.
    pub key_id: Option<KeyId>,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether the caller holds `scope` (admin holds all; write implies read).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|&s| {
            s == scope || s == Scope::Admin || (scope == Scope::ConversationsRead && s == Scope::ConversationsWrite)
        })
    }

    /// 403 naming `scope` unless the caller holds it.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope.as_str()))
        }
    }
}

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Random characters in a key.
const KEY_RANDOM_CHARS: usize = 34;
/// Base-62 checksum characters at a key's end.
const KEY_CHECKSUM_CHARS: usize = 6;
/// `bt_` + 34 random + 6 checksum characters.
const KEY_LEN: usize = 3 + KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS;

/// A new random key: `bt_` + 34 random alphanumerics + a 6-character checksum of them, so a
/// mistyped key is refused before any lookup.
fn generate_key() -> String {
    let random = Alphanumeric.sample_string(&mut rand::thread_rng(), KEY_RANDOM_CHARS);
    let checksum = checksum(&random);
    format!("bt_{random}{checksum}")
}

/// Whether `key` is shaped like a baton key and its checksum holds.
pub fn well_formed_key(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.is_ascii()
        && key.starts_with("bt_")
        && checksum(&key[3..3 + KEY_RANDOM_CHARS]) == key[3 + KEY_RANDOM_CHARS..]
}

/// CRC-32 (IEEE) of `text`, as 6 base-62 characters.
fn checksum(text: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut crc = !0u32;
    for byte in text.bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    let mut value = u64::from(!crc);
    let mut out = [b'0'; KEY_CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates a key for `tenant`; returns its public view, the key itself (shown once) and the ticket.
pub fn issue_key(
    store: &Store,
    tenant: TenantId,
    name: &str,
    scopes: &[Scope],
) -> Result<(ApiKey, String, CommitTicket), StoreError> {
    let secret = generate_key();
    let key = ApiKey {
        id: KeyId::new_random(),
        tenant_id: tenant,
        name: name.to_string(),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        prefix: secret[..10].to_string(),
        created_at: now(),
    };
    let stored = StoredKey { key: key.clone(), hash: hash_key(&secret).to_vec() };
    let ticket = store.insert_key(&stored)?;
    Ok((key, secret, ticket))
}

/// JWT claims baton accepts.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Who the token speaks for; each subject has its own per-key rate limit.
    sub: String,
    /// Tenant id or name.
    tenant: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The credential a request carries, if any.
fn credential(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    for name in ["x-api-key", "x-chatcaptain-key"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_string());
        }
    }
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim().to_string());
        }
    }
    if req.path().ends_with("/ws") || req.path().starts_with("/ws/") {
        return web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned());
    }
    None
}

/// Authenticates `token` (an API key or a JWT) and counts the request against the caller's
/// rate limit (429 beyond it).
pub fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let (principal, caller) = identify(state, token)?;
    state.limits.check_caller(caller)?;
    Ok(principal)
}

/// The principal `token` stands for, and whom the per-key rate limit counts.
fn identify(state: &AppState, token: &str) -> Result<(Principal, Caller), ApiError> {
    let invalid = || ApiError::unauthorized("Invalid API key");
    if token.starts_with("bt_") {
        if !well_formed_key(token) {
            return Err(invalid());
        }
        let hash = hash_key(token);
        let stored = state.store.key_by_hash(&hash)?.ok_or_else(invalid)?;
        if !bool::from(stored.hash.as_slice().ct_eq(hash.as_slice())) {
            return Err(invalid());
        }
        let scopes = stored.key.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let principal = Principal { tenant_id: stored.key.tenant_id, key_id: Some(stored.key.id), scopes };
        return Ok((principal, Caller::Key(stored.key.id)));
    }
    if token.matches('.').count() == 2 {
        let Some(key) = &state.jwt else { return Err(ApiError::unauthorized("JWT authentication is not enabled")) };
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| ApiError::unauthorized(format!("Invalid token: {e}")))?
            .claims;
        let tenant = match claims.tenant.parse::<TenantId>() {
            Ok(id) => state.store.tenant(id)?,
            Err(_) => state.store.tenant_by_name(&claims.tenant)?,
        }
        .ok_or_else(|| ApiError::unauthorized("Invalid token: unknown tenant"))?;
        let scopes = claims.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let caller = Caller::Token { tenant: tenant.id, subject: claims.sub };
        return Ok((Principal { tenant_id: tenant.id, key_id: None, scopes }, caller));
    }
    Err(invalid())
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::internal(&"application state missing")));
        };
        ready(match credential(req) {
            None => Err(ApiError::unauthorized("Missing authentication")),
            Some(token) if token.is_empty() => Err(ApiError::unauthorized("Missing authentication")),
            Some(token) => authenticate(state, &token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_well_formed_and_a_typo_breaks_its_checksum() {
        let key = generate_key();
        assert_eq!(key.len(), 43);
        assert!(well_formed_key(&key));
        let mut typo = key.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed_key(&String::from_utf8(typo).unwrap()));
        assert!(!well_formed_key(&key[..42]));
        assert!(!well_formed_key("bt_ünïcode_is_not_a_key_at_all_xxxxxxxxxxx"));
    }

    #[test]
    fn the_checksum_is_crc32_in_base62() {
        // CRC-32 of "123456789" is 0xCBF43926 (the standard check value) = "3jZRME" in base 62.
        assert_eq!(checksum("123456789"), "3jZRME");
    }
}
