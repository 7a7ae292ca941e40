//! Seed `000` (Bot Control API): `POST /functions/v1/bot-control` and the PostgREST-style
//! `GET /functions/v1/rest-api-proxy/conversations`.
//!
//! Errors are `{"error": "..."}` with the native status. The conversation rows are the
//! native conversations under the seed's column names: `ai_agent_active` = `bot_active`,
//! `channel_account_id` = the channel id, status `open` = `active` (other statuses keep
//! their native names). The query speaks the documented subset of PostgREST: `col=value`
//! or `col=eq.value` filters, `select=a,b` (or `*`), `order=col[.asc|.desc][,…]` (nulls
//! last ascending, first descending, as in Postgres), `limit` (at most [`MAX_ROWS`]) and
//! `offset`; any other operator is a 400.

use std::cmp::Ordering;

use actix_web::{web, HttpResponse};
use baton_actors::model::{Conversation, ConversationStatus};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::Principal;
use crate::compat::{ErrorShape, Reshaped};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::conversations::{control_bot, read_conversation, tenant_conversations};
use crate::routes::resource;

/// Most rows one request answers (PostgREST's `max-rows`).
const MAX_ROWS: usize = 1000;

/// The columns of a conversation row.
const COLUMNS: [&str; 8] = [
    "id",
    "ai_agent_active",
    "status",
    "contact_id",
    "channel_account_id",
    "last_message_at",
    "created_at",
    "updated_at",
];

/// PostgREST operators other than `eq`, refused rather than mistaken for values.
const OTHER_OPERATORS: [&str; 18] = [
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "like",
    "ilike",
    "match",
    "imatch",
    "in",
    "is",
    "isdistinct",
    "fts",
    "plfts",
    "phfts",
    "wfts",
    "cs",
    "not",
];

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/functions/v1/bot-control").route(web::post().to(bot_control)))
        .service(resource("/functions/v1/rest-api-proxy/conversations").route(web::get().to(conversations)));
}

/// `{"error": "..."}`.
#[derive(Debug)]
struct SupabaseShape;

impl ErrorShape for SupabaseShape {
    fn body(error: &ApiError) -> Value {
        json!({ "error": error.message })
    }
}

type Failure = Reshaped<SupabaseShape>;

#[derive(Debug, Deserialize)]
struct BotControl {
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
}

/// `POST /functions/v1/bot-control {conversation_id, action}` → the native bot-control answer.
async fn bot_control(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    body: Result<Json<BotControl>, ApiError>,
) -> Result<HttpResponse, Failure> {
    let principal = principal?;
    let body = body?.0;
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !given(&body.conversation_id) || !given(&body.action) {
        return Err(ApiError::bad_request("conversation_id", "Required: conversation_id, action").into());
    }
    let id = body.conversation_id.as_deref().unwrap_or_default().trim();
    let answer = control_bot(&state, &principal, id, None, body.action.as_deref(), body.agent_id).await.map_err(
        |mut error| {
            if error.status == actix_web::http::StatusCode::NOT_FOUND {
                error.message = "Conversation not found".into();
            }
            error
        },
    )?;
    Ok(HttpResponse::Ok().json(answer))
}

/// A conversation under the seed's column names.
fn row(c: &Conversation) -> Map<String, Value> {
    let status = match c.status {
        ConversationStatus::Active => "open",
        other => other.as_str(),
    };
    [
        ("id", json!(c.id)),
        ("ai_agent_active", json!(c.bot_active)),
        ("status", json!(status)),
        ("contact_id", json!(c.contact_id)),
        ("channel_account_id", json!(c.channel_id)),
        ("last_message_at", json!(c.last_message_at)),
        ("created_at", json!(c.created_at)),
        ("updated_at", json!(c.updated_at)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

/// A PostgREST query over conversation rows.
#[derive(Debug, Default)]
struct RowQuery {
    /// Columns to answer, in order (all when absent).
    select: Option<Vec<String>>,
    /// `(column, value)` equality filters.
    filters: Vec<(String, String)>,
    /// `(column, descending)` sort keys.
    order: Vec<(String, bool)>,
    limit: usize,
    offset: usize,
}

fn unknown_column(name: &str) -> ApiError {
    ApiError::bad_request(name, format!("column conversations.{name} does not exist"))
}

fn column(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if COLUMNS.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(unknown_column(name))
    }
}

impl RowQuery {
    fn parse(query: &Query) -> Result<Self, ApiError> {
        let mut parsed = RowQuery { limit: MAX_ROWS, ..RowQuery::default() };
        for (key, value) in &query.0 {
            match key.as_str() {
                "select" if value.trim().is_empty() || value.trim() == "*" => parsed.select = None,
                "select" => parsed.select = Some(value.split(',').map(column).collect::<Result<_, _>>()?),
                "order" => {
                    for key in value.split(',').filter(|k| !k.trim().is_empty()) {
                        let (name, direction) = key.trim().split_once('.').unwrap_or((key.trim(), "asc"));
                        let descending = match direction {
                            "asc" => false,
                            "desc" => true,
                            other => {
                                return Err(ApiError::bad_request(
                                    "order",
                                    format!("order direction must be asc or desc, got {other:?}"),
                                ))
                            }
                        };
                        parsed.order.push((column(name)?, descending));
                    }
                }
                "limit" => parsed.limit = query.parse::<usize>("limit", "a non-negative number")?.unwrap_or(MAX_ROWS),
                "offset" => parsed.offset = query.parse::<usize>("offset", "a non-negative number")?.unwrap_or(0),
                name => {
                    let name = column(name)?;
                    let wanted = match value.split_once('.') {
                        Some(("eq", wanted)) => wanted,
                        Some((operator, _)) if OTHER_OPERATORS.contains(&operator) => {
                            return Err(ApiError::bad_request(
                                name,
                                format!("operator {operator:?} is not supported; use col=value or col=eq.value"),
                            ))
                        }
                        _ => value.as_str(),
                    };
                    parsed.filters.push((name, wanted.to_string()));
                }
            }
        }
        parsed.limit = parsed.limit.min(MAX_ROWS);
        Ok(parsed)
    }

    fn keeps(&self, row: &Map<String, Value>) -> bool {
        self.filters.iter().all(|(name, wanted)| match &row[name] {
            Value::String(s) => s == wanted,
            Value::Bool(b) => wanted.parse::<bool>() == Ok(*b),
            Value::Null => false,
            other => &other.to_string() == wanted,
        })
    }

    fn compare(&self, a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
        self.order.iter().fold(Ordering::Equal, |so_far, (name, descending)| {
            let ordering = compare_cells(&a[name], &b[name]);
            so_far.then(if *descending { ordering.reverse() } else { ordering })
        })
    }

    fn project(&self, mut row: Map<String, Value>) -> Map<String, Value> {
        match &self.select {
            None => row,
            Some(columns) => columns.iter().map(|c| (c.clone(), row.remove(c).unwrap_or(Value::Null))).collect(),
        }
    }
}

/// Cell order: timestamps as instants, other strings and booleans by value, nulls last.
fn compare_cells(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::String(a), Value::String(b)) => {
            match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.cmp(b),
            }
        }
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => Ordering::Equal,
    }
}

/// `GET /functions/v1/rest-api-proxy/conversations`: the tenant's conversations across its
/// chatbots as a bare array of rows.
async fn conversations(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    query: Query,
) -> Result<HttpResponse, Failure> {
    let principal = principal?;
    let query = RowQuery::parse(&query)?;
    let by_id = query.filters.iter().find(|(name, _)| name == "id").map(|(_, id)| id.clone());
    let found = match by_id {
        Some(id) => match read_conversation(&state, &principal, &id, None) {
            Ok(c) => vec![c],
            Err(e) if e.status == actix_web::http::StatusCode::NOT_FOUND => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        None => tenant_conversations(&state, &principal, |c| query.keeps(&row(c)))?,
    };
    let mut rows: Vec<Map<String, Value>> = found.iter().map(row).filter(|r| query.keeps(r)).collect();
    rows.sort_by(|a, b| query.compare(a, b));
    let rows: Vec<Map<String, Value>> =
        rows.into_iter().skip(query.offset).take(query.limit).map(|r| query.project(r)).collect();
    Ok(HttpResponse::Ok().json(rows))
}
