//! The conversation actor: one per conversation, owner of its state.
//!
//! Every change to a conversation arrives here as a message, so a provider's message and an
//! agent's pause never interleave. A turn computes the new state with the engine, writes it
//! and its messages in one store transaction, updates memory only after that write
//! succeeded, and answers with a commit ticket: the caller acknowledges once it is durable,
//! while this actor is already free for the next message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::botconfig::BotConfig;
use crate::engine::{self, ReplyDraft};
use crate::model::{
    now, Channel, Contact, ContactId, Conversation, ConversationId, ConversationStatus, Message,
    MessageId, Reply, ReplyKind, Role,
};
use crate::registry::Registry;
use crate::store::{CommitTicket, ConversationWrite, HandleOutcome, Store, StoreError};

/// What can go wrong talking to a conversation.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("conversation not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The conversation's mailbox is full; try again shortly.
    #[error("conversation is overloaded")]
    Overloaded,
    /// The actor could not be reached after retries (shutting down).
    #[error("conversation is unavailable")]
    Unavailable,
    /// The actor had stopped; the registry retries on a fresh one. Never reaches callers.
    #[error("conversation actor passivated")]
    Passivated,
}

/// Contact details a provider sends with a message.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ContactInput {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub phones: Option<Vec<String>>,
    #[serde(default)]
    pub emails: Option<Vec<String>>,
}

/// The channel and provider identity a conversation is opened on.
#[derive(Debug, Clone)]
pub struct Origin {
    pub channel_id: String,
    pub channel_name: String,
    pub provider_id: String,
    pub contact: Option<ContactInput>,
}

/// An incoming message, already validated by the HTTP layer.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    /// The provider's message id, for deduplication.
    pub provider_message_id: Option<String>,
    pub message_type: String,
    /// What the user wrote or picked (text, else the button id).
    pub text: String,
    /// The business's own reply echoed back by the provider.
    pub from_me: bool,
}

/// Handle a provider's incoming message.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Handled, ConversationError>")]
pub struct HandleIncoming {
    pub bot: Arc<BotConfig>,
    pub origin: Origin,
    pub message: IncomingMessage,
}

/// The result of [`HandleIncoming`].
#[derive(Debug, Clone)]
pub struct Handled {
    pub outcome: HandleOutcome,
    pub duplicate: bool,
    pub ticket: CommitTicket,
}

/// Open the conversation if it does not exist yet (no message is stored).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Changed, ConversationError>")]
pub struct OpenConversation {
    pub bot: Arc<BotConfig>,
    pub origin: Origin,
}

/// Pause (`active = false`) or resume the bot.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Changed, ConversationError>")]
pub struct SetBotActive {
    pub active: bool,
    pub agent_id: Option<String>,
}

/// Change status, merge variables, replace metadata.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<Changed, ConversationError>")]
pub struct UpdateConversation {
    pub status: Option<ConversationStatus>,
    pub variables: Option<Map<String, Value>>,
    pub metadata: Option<Value>,
}

/// Store an agent's reply; pauses the bot when the chatbot says so.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<AgentMessagePosted, ConversationError>")]
pub struct PostAgentMessage {
    pub bot: Arc<BotConfig>,
    pub content: String,
    pub agent_id: Option<String>,
}

/// Delete the conversation and everything in it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CommitTicket, ConversationError>")]
pub struct DeleteConversation;

/// Finish the mailbox and stop (used at shutdown).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// A conversation after a change.
#[derive(Debug, Clone)]
pub struct Changed {
    pub conversation: Conversation,
    /// Whether this message created the conversation.
    pub created: bool,
    pub ticket: CommitTicket,
}

/// The result of [`PostAgentMessage`].
#[derive(Debug, Clone)]
pub struct AgentMessagePosted {
    pub message: Message,
    pub conversation: Conversation,
    pub ticket: CommitTicket,
}

/// The actor owning one conversation.
#[derive(Debug)]
pub struct ConversationActor {
    /// The conversation this actor owns (fixed for its life).
    id: ConversationId,
    store: Store,
    registry: Registry,
    /// Which registry entry this actor is, so a stale one never removes its successor.
    generation: u64,
    /// The conversation as last persisted; `None` until it is opened.
    conversation: Option<Conversation>,
    /// When the last message was handled, for passivation.
    last_active: Instant,
    idle_after: Duration,
    mailbox_capacity: usize,
    /// Set once the actor decided to stop; later messages are bounced to a fresh actor.
    passivated: bool,
}

impl ConversationActor {
    /// Builds the actor from the conversation's snapshot in `store`.
    pub(crate) fn load(
        id: ConversationId,
        store: Store,
        registry: Registry,
        generation: u64,
        idle_after: Duration,
        mailbox_capacity: usize,
    ) -> Self {
        let conversation = match store.conversation(id) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, conversation_id = %id, "could not load conversation snapshot");
                None
            }
        };
        Self { id, store, registry, generation, conversation, last_active: Instant::now(), idle_after, mailbox_capacity, passivated: false }
    }

    fn passivate(&mut self, ctx: &mut Context<Self>) {
        self.passivated = true;
        self.registry.forget(self.id, self.generation);
        ctx.stop();
    }

    /// Common start of every turn: bounce if passivated, note activity.
    fn begin(&mut self) -> Result<(), ConversationError> {
        if self.passivated {
            return Err(ConversationError::Passivated);
        }
        self.last_active = Instant::now();
        Ok(())
    }

    fn existing(&self) -> Result<&Conversation, ConversationError> {
        self.conversation.as_ref().ok_or(ConversationError::NotFound)
    }

    /// Opens the conversation (with its channel and contact) if needed and returns a working
    /// copy plus the contact to write, without touching memory.
    fn open(&self, bot: &BotConfig, origin: &Origin) -> Result<(Conversation, bool, Option<Contact>, CommitTicket), ConversationError> {
        let at = now();
        let chatbot = &bot.chatbot;
        let contact_id = ContactId::derive(chatbot.id, &origin.provider_id);
        let existing_contact = self.store.contact(contact_id)?;
        let contact = merge_contact(existing_contact.as_ref(), contact_id, bot, origin);
        if let Some(c) = &self.conversation {
            return Ok((c.clone(), false, contact, CommitTicket::NONE));
        }
        let channel = Channel {
            id: origin.channel_id.clone(),
            chatbot_id: chatbot.id,
            tenant_id: chatbot.tenant_id,
            provider: "whatsapp".into(),
            name: origin.channel_name.clone(),
            reply_webhook: None,
            human_takeover_webhook: None,
            created_at: at,
            updated_at: at,
        };
        let (_, ticket) = self.store.insert_channel_if_absent(&channel)?;
        let conversation = Conversation {
            id: self.id,
            tenant_id: chatbot.tenant_id,
            chatbot_id: chatbot.id,
            channel_id: origin.channel_id.clone(),
            channel_name: origin.channel_name.clone(),
            contact_id,
            provider_id: origin.provider_id.clone(),
            status: ConversationStatus::Active,
            bot_active: true,
            next_seq: 1,
            variables: Map::new(),
            metadata: Value::Null,
            last_message_at: None,
            last_seen_at: None,
            created_at: at,
            updated_at: at,
        };
        let contact = contact.or_else(|| existing_contact.is_none().then(|| new_contact(contact_id, bot, origin)));
        Ok((conversation, true, contact, ticket))
    }

    /// Writes a turn and, once written, makes it the actor's state.
    fn commit(&mut self, write: ConversationWrite<'_>) -> Result<CommitTicket, ConversationError> {
        let ticket = self.store.write_conversation(&write)?;
        if let Some(c) = write.conversation {
            self.conversation = Some(c.clone());
        }
        Ok(ticket)
    }
}

fn new_contact(id: ContactId, bot: &BotConfig, origin: &Origin) -> Contact {
    let at = now();
    let phone_like = !origin.provider_id.is_empty()
        && origin.provider_id.trim_start_matches('+').chars().all(|c| c.is_ascii_digit());
    Contact {
        id,
        tenant_id: bot.chatbot.tenant_id,
        chatbot_id: bot.chatbot.id,
        provider_id: origin.provider_id.clone(),
        first_name: String::new(),
        last_name: String::new(),
        phones: if phone_like { vec![origin.provider_id.clone()] } else { Vec::new() },
        emails: Vec::new(),
        created_at: at,
        updated_at: at,
    }
}

/// The contact updated with what the provider sent, or `None` when nothing changes.
fn merge_contact(existing: Option<&Contact>, id: ContactId, bot: &BotConfig, origin: &Origin) -> Option<Contact> {
    let input = origin.contact.as_ref()?;
    let mut contact = existing.cloned().unwrap_or_else(|| new_contact(id, bot, origin));
    let before = contact.clone();
    if let Some(v) = &input.first_name {
        contact.first_name = v.trim().to_string();
    }
    if let Some(v) = &input.last_name {
        contact.last_name = v.trim().to_string();
    }
    if let Some(v) = &input.phones {
        contact.phones = v.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
    }
    if let Some(v) = &input.emails {
        contact.emails = v.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
    }
    if existing.is_some() && contact == before {
        return None;
    }
    contact.updated_at = now();
    Some(contact)
}

fn reply_message(conversation: ConversationId, seq: u64, draft: &ReplyDraft) -> Message {
    Message {
        id: MessageId::new_random(),
        conversation_id: conversation,
        seq,
        role: Role::Assistant,
        content: draft.text.clone(),
        message_type: ReplyKind::for_button_count(draft.buttons.len()).as_str().to_string(),
        buttons: draft.buttons.clone(),
        tokens_used: None,
        provider_message_id: None,
        agent_id: None,
        created_at: now(),
    }
}

/// A stored reply message as the reply the channel receives.
pub fn as_reply(message: &Message) -> Reply {
    Reply {
        id: message.id,
        kind: ReplyKind::for_button_count(message.buttons.len()),
        text: message.content.clone(),
        buttons: message.buttons.clone(),
        whatsapp_flow: None,
    }
}

impl Actor for ConversationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.registry.actor_started();
        let check_every = (self.idle_after / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
        ctx.run_interval(check_every, |actor, ctx| {
            if actor.last_active.elapsed() >= actor.idle_after {
                actor.registry.count_passivation();
                actor.passivate(ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.registry.actor_stopped();
    }
}

impl Handler<HandleIncoming> for ConversationActor {
    type Result = Result<Handled, ConversationError>;

    #[tracing::instrument(skip_all, fields(conversation_id = %self.id))]
    fn handle(&mut self, msg: HandleIncoming, _ctx: &mut Self::Context) -> Self::Result {
        self.begin()?;
        let HandleIncoming { bot, origin, message } = msg;
        if let Some(pmid) = &message.provider_message_id {
            if self.conversation.is_some() {
                if let Some(outcome) = self.store.dedupe(self.id, pmid)? {
                    // The first answer may still be on its way to disk; wait for it too.
                    return Ok(Handled { outcome, duplicate: true, ticket: self.store.ticket_for_all() });
                }
            }
        }
        let (mut conversation, created, contact, channel_ticket) = self.open(&bot, &origin)?;
        let at = now();
        let first_message = conversation.next_seq == 1;
        let mut messages = Vec::with_capacity(3);
        let user_message = Message {
            id: MessageId::new_random(),
            conversation_id: self.id,
            seq: conversation.next_seq,
            role: if message.from_me { Role::Agent } else { Role::User },
            content: message.text.clone(),
            message_type: message.message_type.clone(),
            buttons: Vec::new(),
            tokens_used: None,
            provider_message_id: message.provider_message_id.clone(),
            agent_id: None,
            created_at: at,
        };
        let message_id = user_message.id;
        messages.push(user_message);
        let settings = &bot.rules.settings;
        if message.from_me {
            if settings.auto_pause_on_agent_message {
                conversation.bot_active = false;
            }
        } else if settings.chatbot_enabled && conversation.bot_active {
            let decision = engine::respond(&bot.rules, &message.text, first_message);
            for draft in &decision.replies {
                messages.push(reply_message(self.id, conversation.next_seq + messages.len() as u64, draft));
            }
            if decision.pause_bot {
                conversation.bot_active = false;
            }
        }
        conversation.next_seq += messages.len() as u64;
        conversation.last_message_at = Some(at);
        conversation.updated_at = at;
        let outcome = HandleOutcome {
            conversation_id: self.id,
            contact_id: conversation.contact_id,
            message_id,
            bot_active: conversation.bot_active,
            replies: messages.iter().filter(|m| m.role == Role::Assistant).map(as_reply).collect(),
        };
        let ticket = self.commit(ConversationWrite {
            conversation: Some(&conversation),
            created,
            contact: contact.as_ref(),
            messages: &messages,
            dedupe: message.provider_message_id.as_deref().map(|p| (p, &outcome)),
            ..ConversationWrite::default()
        })?;
        Ok(Handled { outcome, duplicate: false, ticket: ticket.max(channel_ticket) })
    }
}

impl Handler<OpenConversation> for ConversationActor {
    type Result = Result<Changed, ConversationError>;

    fn handle(&mut self, msg: OpenConversation, _ctx: &mut Self::Context) -> Self::Result {
        self.begin()?;
        let (conversation, created, contact, channel_ticket) = self.open(&msg.bot, &msg.origin)?;
        if !created && contact.is_none() {
            return Ok(Changed { conversation, created, ticket: CommitTicket::NONE });
        }
        let ticket = self.commit(ConversationWrite {
            conversation: Some(&conversation),
            created,
            contact: contact.as_ref(),
            ..ConversationWrite::default()
        })?;
        Ok(Changed { conversation, created, ticket: ticket.max(channel_ticket) })
    }
}

impl Handler<SetBotActive> for ConversationActor {
    type Result = Result<Changed, ConversationError>;

    #[tracing::instrument(skip_all, fields(conversation_id = %self.id, active = msg.active))]
    fn handle(&mut self, msg: SetBotActive, _ctx: &mut Self::Context) -> Self::Result {
        self.begin()?;
        let mut conversation = self.existing()?.clone();
        conversation.bot_active = msg.active;
        conversation.updated_at = now();
        let ticket = self.commit(ConversationWrite { conversation: Some(&conversation), ..ConversationWrite::default() })?;
        Ok(Changed { conversation, created: false, ticket })
    }
}

impl Handler<UpdateConversation> for ConversationActor {
    type Result = Result<Changed, ConversationError>;

    fn handle(&mut self, msg: UpdateConversation, _ctx: &mut Self::Context) -> Self::Result {
        self.begin()?;
        let mut conversation = self.existing()?.clone();
        if let Some(status) = msg.status {
            conversation.status = status;
        }
        if let Some(variables) = msg.variables {
            conversation.variables.extend(variables);
        }
        if let Some(metadata) = msg.metadata {
            conversation.metadata = metadata;
        }
        conversation.updated_at = now();
        let ticket = self.commit(ConversationWrite { conversation: Some(&conversation), ..ConversationWrite::default() })?;
        Ok(Changed { conversation, created: false, ticket })
    }
}

impl Handler<PostAgentMessage> for ConversationActor {
    type Result = Result<AgentMessagePosted, ConversationError>;

    fn handle(&mut self, msg: PostAgentMessage, _ctx: &mut Self::Context) -> Self::Result {
        self.begin()?;
        let mut conversation = self.existing()?.clone();
        let at = now();
        let message = Message {
            id: MessageId::new_random(),
            conversation_id: self.id,
            seq: conversation.next_seq,
            role: Role::Agent,
            content: msg.content,
            message_type: "text".into(),
            buttons: Vec::new(),
            tokens_used: None,
            provider_message_id: None,
            agent_id: msg.agent_id,
            created_at: at,
        };
        conversation.next_seq += 1;
        conversation.last_message_at = Some(at);
        conversation.updated_at = at;
        if msg.bot.rules.settings.auto_pause_on_agent_message {
            conversation.bot_active = false;
        }
        let ticket = self.commit(ConversationWrite {
            conversation: Some(&conversation),
            messages: std::slice::from_ref(&message),
            ..ConversationWrite::default()
        })?;
        Ok(AgentMessagePosted { message, conversation, ticket })
    }
}

impl Handler<DeleteConversation> for ConversationActor {
    type Result = Result<CommitTicket, ConversationError>;

    fn handle(&mut self, _msg: DeleteConversation, ctx: &mut Self::Context) -> Self::Result {
        self.begin()?;
        let conversation = self.existing()?.clone();
        let ticket = self.store.delete_conversation(&conversation)?;
        self.conversation = None;
        self.passivate(ctx);
        Ok(ticket)
    }
}

impl Handler<Drain> for ConversationActor {
    type Result = ();

    fn handle(&mut self, _msg: Drain, ctx: &mut Self::Context) {
        if !self.passivated {
            self.passivate(ctx);
        }
    }
}
