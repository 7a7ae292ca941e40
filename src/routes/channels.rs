//! `/v1/chatbots/{bot}/channels`: channels are created by the first message on them and
//! configured here (name, provider, reply and human-takeover webhooks).

use actix_web::{web, HttpResponse};
use baton_actors::model::{now, Channel, ReplyWebhook, TakeoverWebhook};
use baton_actors::webhook::is_private;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{merge_patch, Json};
use crate::routes::{max_chars, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chatbots/{bot}/channels").route(web::get().to(list))).service(
        resource("/v1/chatbots/{bot}/channels/{channel}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::patch().to(patch)),
    );
}

/// What a secret is shown as.
const MASK: &str = "********";

/// A channel as served: webhook secrets masked.
pub fn channel_view(channel: &Channel) -> Value {
    let mut view = serde_json::to_value(channel).unwrap_or_default();
    if let Some(secret) = view.pointer_mut("/reply_webhook/secret") {
        if !secret.is_null() {
            *secret = Value::String(MASK.into());
        }
    }
    view
}

/// Checks a webhook URL: http(s), a host, and no private address unless allowed.
fn validate_url(field: &str, raw: &str, allow_private: bool) -> Result<(), ApiError> {
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::unprocessable(field, format!("{field} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::unprocessable(field, format!("{field} must be an http or https URL")));
    }
    let private = match url.host() {
        None => return Err(ApiError::unprocessable(field, format!("{field} has no host"))),
        Some(url::Host::Ipv4(ip)) => is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_private(ip.into()),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
    };
    if private && !allow_private {
        return Err(ApiError::unprocessable(field, format!("{field} points at a private or loopback address")));
    }
    Ok(())
}

fn validate_channel(channel: &mut Channel, allow_private: bool) -> Result<(), ApiError> {
    channel.name = channel.name.trim().to_string();
    max_chars("name", &channel.name, 200)?;
    channel.provider = channel.provider.trim().to_ascii_lowercase();
    if channel.provider.is_empty() {
        channel.provider = "whatsapp".into();
    }
    max_chars("provider", &channel.provider, 50)?;
    if let Some(ReplyWebhook { url, headers, .. }) = &channel.reply_webhook {
        validate_url("reply_webhook.url", url, allow_private)?;
        validate_headers("reply_webhook.headers", headers)?;
    }
    if let Some(TakeoverWebhook { url, headers, .. }) = &channel.human_takeover_webhook {
        validate_url("human_takeover_webhook.url", url, allow_private)?;
        validate_headers("human_takeover_webhook.headers", headers)?;
    }
    Ok(())
}

fn validate_headers(field: &str, headers: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    for (name, value) in headers {
        if actix_web::http::header::HeaderName::try_from(name.as_str()).is_err() {
            return Err(ApiError::unprocessable(
                format!("{field}.{name}"),
                format!("{name:?} is not a valid header name"),
            ));
        }
        if actix_web::http::header::HeaderValue::try_from(value.as_str()).is_err() {
            return Err(ApiError::unprocessable(format!("{field}.{name}"), "not a valid header value"));
        }
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/channels",
    operation_id = "list_channels",
    tag = "channels",
    summary = "List channels",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "The channels", body = crate::openapi::ChannelList),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(&principal, &bot)?;
    let channels: Vec<Value> = state.store.channels_of(bot.chatbot.id)?.iter().map(channel_view).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": channels })))
}

fn find(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    channel: &str,
) -> Result<(baton_actors::model::ChatbotId, Option<Channel>), ApiError> {
    let bot = state.chatbot(principal, bot)?;
    Ok((bot.chatbot.id, state.store.channel(bot.chatbot.id, channel)?))
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/channels/{channel}",
    operation_id = "get_channel",
    tag = "channels",
    summary = "Get a channel",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("channel" = String, Path, description = "The provider's channelId"),
    ),
    responses(
        (status = 200, description = "The channel (secret masked)", body = Channel),
        (status = 404, description = "No such chatbot or channel", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let (_, channel) = find(&state, &principal, &path.0, &path.1)?;
    Ok(HttpResponse::Ok().json(channel_view(&channel.ok_or_else(|| ApiError::not_found("channel"))?)))
}

const READ_ONLY: &[&str] = &["id", "chatbot_id", "tenant_id", "created_at", "updated_at"];

/// Creates or replaces the channel's configuration. A secret sent back masked keeps the stored one.
#[utoipa::path(
    put,
    path = "/v1/chatbots/{bot}/channels/{channel}",
    operation_id = "put_channel",
    tag = "channels",
    summary = "Create or replace a channel's configuration",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("channel" = String, Path, description = "The provider's channelId"),
    ),
    request_body = crate::openapi::ChannelConfig,
    responses(
        (status = 200, description = "The channel (secret masked)", body = Channel),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "A bad or private webhook URL, or a bad header",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn put(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let (bot_id, existing) = find(&state, &principal, &path.0, &path.1)?;
    let channel_id = path.1.trim();
    if channel_id.is_empty() {
        return Err(ApiError::bad_request("channelId", "channelId must not be empty"));
    }
    let at = now();
    let blank = Channel {
        id: channel_id.to_string(),
        chatbot_id: bot_id,
        tenant_id: principal.tenant_id,
        provider: "whatsapp".into(),
        name: channel_id.to_string(),
        reply_webhook: None,
        human_takeover_webhook: None,
        created_at: existing.as_ref().map_or(at, |c| c.created_at),
        updated_at: at,
    };
    let mut channel: Channel = merge_patch(&blank, body.0, READ_ONLY)?;
    keep_masked_secret(&mut channel, existing.as_ref());
    save(&state, channel).await
}

/// Changes only the fields given.
#[utoipa::path(
    patch,
    path = "/v1/chatbots/{bot}/channels/{channel}",
    operation_id = "patch_channel",
    tag = "channels",
    summary = "Change a channel (only the fields given)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("channel" = String, Path, description = "The provider's channelId"),
    ),
    request_body = crate::openapi::ChannelConfig,
    responses(
        (status = 200, description = "The channel (secret masked)", body = Channel),
        (status = 404, description = "No such chatbot or channel", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "A bad or private webhook URL, or a bad header",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn patch(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let (_, existing) = find(&state, &principal, &path.0, &path.1)?;
    let existing = existing.ok_or_else(|| ApiError::not_found("channel"))?;
    let mut channel: Channel = merge_patch(&existing, body.0, READ_ONLY)?;
    keep_masked_secret(&mut channel, Some(&existing));
    channel.updated_at = now();
    save(&state, channel).await
}

fn keep_masked_secret(channel: &mut Channel, existing: Option<&Channel>) {
    if let Some(hook) = &mut channel.reply_webhook {
        if hook.secret.as_deref() == Some(MASK) {
            hook.secret = existing.and_then(|c| c.reply_webhook.as_ref()).and_then(|h| h.secret.clone());
        }
    }
}

async fn save(state: &AppState, mut channel: Channel) -> Result<HttpResponse, ApiError> {
    validate_channel(&mut channel, state.settings.webhooks.allow_private_networks)?;
    let ticket = state.store.put_channel(&channel)?;
    state.store.durable(ticket).await?;
    Ok(HttpResponse::Ok().json(channel_view(&channel)))
}
