//! Data lifecycle: `/v1/contacts/{id}` (look a contact up, or erase it with everything of
//! theirs) and `…/conversations/{id}/export` (a conversation as one JSON document).
//!
//! Erasure goes through each conversation's actor, the one path that deletes a conversation
//! (it stops the actor, so nothing of the conversation is written after it), then removes what
//! no actor owns: the outbox deliveries of those conversations and the contact record.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use baton_actors::conversation::{ConversationError, DeleteConversation};
use baton_actors::model::{now, Contact, ContactId, Conversation, ConversationId};
use baton_actors::store::{CommitTicket, Store};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::routes::conversations::{read_conversation, view};
use crate::routes::resource;
use crate::routes::transfers::transfer_view;

/// Messages read from the store per chunk of an export, so a long conversation is streamed
/// out in pieces rather than gathered in memory first.
const EXPORT_PAGE: usize = 256;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/contacts/{id}").route(web::get().to(get)).route(web::delete().to(delete)));
    for prefix in ["/v1/chatbots/{bot}/conversations/{id}", "/v1/conversations/{id}"] {
        cfg.service(resource(&format!("{prefix}/export")).route(web::get().to(export)));
    }
}

/// The caller's contact `raw` (404 for a malformed id or another tenant's contact).
fn find_contact(state: &AppState, principal: &Principal, raw: &str) -> Result<Contact, ApiError> {
    let not_found = || ApiError::not_found("contact");
    let id: ContactId = raw.trim().parse().map_err(|_| not_found())?;
    match state.store.contact(id)? {
        Some(contact) if contact.tenant_id == principal.tenant_id => Ok(contact),
        _ => Err(not_found()),
    }
}

/// A contact as served, with the ids of its conversations.
fn contact_view(state: &AppState, contact: &Contact) -> Result<Value, ApiError> {
    let mut conversations = Vec::new();
    for id in state.store.conversation_ids_of_contact(contact.id)? {
        if state.store.conversation(id)?.is_some() {
            conversations.push(id);
        }
    }
    Ok(json!({
        "id": contact.id,
        "chatbot_id": contact.chatbot_id,
        "provider_id": contact.provider_id,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "phones": contact.phones,
        "emails": contact.emails,
        "conversation_ids": conversations,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/contacts/{id}",
    operation_id = "get_contact",
    tag = "contacts",
    summary = "Get a contact with the ids of its conversations",
    params(("id" = String, Path, description = "Contact id")),
    responses(
        (status = 200, description = "The contact", body = crate::openapi::ContactView),
        (status = 404, description = "No such contact", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let contact = find_contact(&state, &principal, &id)?;
    Ok(HttpResponse::Ok().json(contact_view(&state, &contact)?))
}

#[utoipa::path(
    delete,
    path = "/v1/contacts/{id}",
    operation_id = "delete_contact",
    tag = "contacts",
    summary = "Erase a contact and everything of theirs",
    description = "Deletes the contact, all its conversations with their messages, sessions, transfers \
        (waiting ones leave their queue), provider message ids and webhook deliveries, in one request. \
        A later message from the same provider id starts a fresh conversation.",
    params(("id" = String, Path, description = "Contact id")),
    responses(
        (status = 204, description = "Erased"),
        (status = 404, description = "No such contact", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let contact = find_contact(&state, &principal, &id)?;
    let ticket = erase_contact(&state, &contact).await?;
    state.store.durable(ticket).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes `contact` with all its conversations and everything in them; the ticket covers it all.
///
/// The contact record goes last, so a failure part-way leaves the contact findable and the
/// request can simply be repeated.
#[tracing::instrument(skip_all, fields(contact_id = %contact.id))]
async fn erase_contact(state: &AppState, contact: &Contact) -> Result<CommitTicket, ApiError> {
    let conversations = state.store.conversation_ids_of_contact(contact.id)?;
    let mut ticket = CommitTicket::NONE;
    for &id in &conversations {
        match state.registry.send(id, DeleteConversation).await {
            Ok(deleted) => ticket = ticket.max(deleted),
            // Already gone (a concurrent delete); its index entry goes with the contact.
            Err(ConversationError::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let (deliveries, deleted) = state.store.delete_deliveries_of(contact.tenant_id, &conversations)?;
    ticket = ticket.max(deleted);
    ticket = ticket.max(state.store.delete_contact(contact.id)?);
    tracing::info!(conversations = conversations.len(), deliveries, "contact erased");
    Ok(ticket)
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/conversations/{id}/export",
    operation_id = "export_conversation",
    tag = "conversations",
    summary = "Export a conversation as one JSON document",
    description = "The conversation, its contact, every message in `seq` order, its sessions and \
        transfers, as a file download. Messages stored after the export started are not included.",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    responses(
        (
            status = 200,
            description = "The export",
            body = crate::openapi::ConversationExport,
            headers(("Content-Disposition" = String, description = "attachment; filename=\"conversation-{id}.json\"")),
        ),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn export(req: HttpRequest, state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let info = req.match_info();
    let conversation = read_conversation(&state, &principal, info.get("id").unwrap_or(""), info.get("bot"))?;
    let head = export_head(&state, &conversation)?;
    let messages = message_chunks(state.store.clone(), conversation.id, conversation.next_seq.saturating_sub(1));
    let body = futures_util::stream::once(async move { Ok(web::Bytes::from(head)) }).chain(messages);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"conversation-{}.json\"", conversation.id),
        ))
        .streaming(body))
}

/// The export up to the opening of its `messages` array: everything but the messages.
fn export_head(state: &AppState, conversation: &Conversation) -> Result<Vec<u8>, ApiError> {
    let contact = match state.store.contact(conversation.contact_id)? {
        Some(contact) => contact_view(state, &contact)?,
        None => Value::Null,
    };
    let sessions = state.store.sessions_of_conversation(conversation.id)?;
    let transfers = state
        .store
        .transfers_of_conversation(conversation.id)?
        .iter()
        .map(|t| transfer_view(state, t))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let head = json!({
        "conversation": view(state, conversation)?,
        "contact": contact,
        "sessions": sessions,
        "transfers": transfers,
        "exported_at": now(),
    });
    // `head` is an object: reopen it to append `messages` as its last member.
    let mut bytes = serde_json::to_vec(&head).map_err(|e| ApiError::internal(&e))?;
    bytes.pop();
    bytes.extend_from_slice(b",\"messages\":[");
    Ok(bytes)
}

/// The messages of `conversation` up to `last_seq` as JSON array elements, a page at a time,
/// then the closing of the array and of the document.
fn message_chunks(
    store: Store,
    conversation: ConversationId,
    last_seq: u64,
) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> {
    // State: the seq to continue after and whether a message was written, or None once the
    // document is closed.
    futures_util::stream::unfold(Some((0u64, false)), move |state| {
        let store = store.clone();
        async move {
            let (after, mut wrote) = state?;
            let cut = |error: &dyn std::fmt::Display| {
                // The status line is sent already: cut the response so it cannot pass as complete.
                tracing::error!(%error, conversation_id = %conversation, "export failed part-way");
                Some((Err(std::io::Error::other("the export failed part-way")), None))
            };
            let page = match store.messages(conversation, after, EXPORT_PAGE) {
                Ok(page) => page,
                Err(error) => return cut(&error),
            };
            let done = page.len() < EXPORT_PAGE || page.last().is_some_and(|m| m.seq >= last_seq);
            let mut chunk = Vec::with_capacity(page.len() * 256);
            for message in page.iter().filter(|m| m.seq <= last_seq) {
                if wrote {
                    chunk.push(b',');
                }
                if let Err(error) = serde_json::to_writer(&mut chunk, message) {
                    return cut(&error);
                }
                wrote = true;
            }
            if done {
                chunk.extend_from_slice(b"]}");
                return Some((Ok(web::Bytes::from(chunk)), None));
            }
            let next = page.last().map_or(after, |m| m.seq);
            Some((Ok(web::Bytes::from(chunk)), Some((next, wrote))))
        }
    })
}
