//! The conversation actor: one per conversation, owner of its state.
//!
//! Every change to a conversation arrives here as a message, so a provider's message and an
//! agent's pause never interleave. A turn computes the new state with the pure engine (rules,
//! flows, templating), collects everything it changes in a [`Turn`], writes it all in one
//! atomic store batch, updates memory only after that write succeeded, and answers with a
//! commit ticket: the caller acknowledges once it is durable, while this actor is already
//! free for the next message.
//!
//! Turns that run a flow's `api_fetch` step await the HTTP call as an atomic actor future:
//! the thread is never blocked, and no other message of this conversation interleaves.
//!
//! A turn that panics or meets a store error fails only its own request: nothing of it was
//! written (the write is its last step), and the actor stops so that the conversation's next
//! message is handled by a fresh actor rebuilt from the store. Other conversations, on this
//! arbiter thread or any other, never notice.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::fut::{self, ActorFutureExt, WrapFuture};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sled::LeafHint;

use crate::botconfig::BotConfig;
use crate::engine::flow::{self, FetchOutcome, FetchRequest, Progress};
use crate::engine::{self, ReplyDraft, Route};
use crate::model::{
    now, Channel, Contact, ContactId, Conversation, ConversationId, ConversationStatus, Delivery, DeliveryId,
    DeliveryKind, DeliveryStatus, Flow, FlowId, Message, MessageId, Reply, ReplyKind, Role, Session, SessionId,
    SessionStatus, TeamId, Transfer, TransferId, TransferSource, TransferStatus,
};
use crate::registry::Registry;
use crate::store::recent::{Earlier, RecentProviderIds};
use crate::store::{CommitTicket, ConversationWrite, HandleOutcome, Store, StoreError};

/// Largest `api_fetch` answer read, in bytes.
const MAX_FETCH_BODY: usize = 1 << 20;

/// What can go wrong talking to a conversation.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("conversation not found")]
    NotFound,
    /// Something the request names does not exist ("flow", "step", "session", "transfer").
    #[error("{0} not found")]
    Missing(&'static str),
    /// The request does not fit the conversation's state.
    #[error("{0}")]
    Conflict(String),
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
    /// The turn panicked (the panic's message, for the log): nothing of it was stored, and the
    /// conversation restarts from the store on its next message.
    #[error("the conversation failed while handling this request")]
    Panicked(String),
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
    /// `async` handles: the bot's replies go to the channel's reply webhook.
    pub deliver_replies: bool,
}

/// The result of [`HandleIncoming`].
#[derive(Debug)]
pub struct Handled {
    pub outcome: HandleOutcome,
    pub duplicate: bool,
    pub ticket: CommitTicket,
    /// For a sync message the AI model answers: resolves with the reply once accepted, or
    /// `None` when it was superseded (a newer message, a pause) before it could be.
    pub ai_reply: Option<tokio::sync::oneshot::Receiver<Option<AiReplied>>>,
}

/// [`HandleIncoming`] answered on `reply` once what the turn wrote is durable
/// ([`crate::registry::Registry::handle_durably`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct HandleDurably {
    pub incoming: HandleIncoming,
    pub reply: tokio::sync::oneshot::Sender<Result<Handled, ConversationError>>,
    /// Counts this message in the mailbox bound until its turn ends, not until it is durable.
    pub in_flight: crate::registry::InFlight,
}

/// An AI reply accepted into the conversation.
#[derive(Debug, Clone)]
pub struct AiReplied {
    pub replies: Vec<Reply>,
    pub bot_active: bool,
    pub ticket: CommitTicket,
}

/// An AI answer the actor waits for.
#[derive(Debug, Clone)]
struct AiJob {
    /// The actor's `ai_token` when the job was made; a different token now means superseded.
    token: u64,
    bot: Arc<BotConfig>,
    user_text: String,
    user_message: MessageId,
    provider_message_id: Option<String>,
    deliver_replies: bool,
}

/// Open the conversation if it does not exist yet (no message is stored).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Changed, ConversationError>")]
pub struct OpenConversation {
    pub bot: Arc<BotConfig>,
    pub origin: Origin,
}

/// Pause (`active = false`) or resume the bot. A pause ends the active flow session.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Changed, ConversationError>")]
pub struct SetBotActive {
    pub active: bool,
    pub agent_id: Option<String>,
}

/// Change status, merge variables (into the conversation and its open session), replace metadata.
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

/// Record a channel event (`user_seen_message` updates `last_seen_at`; others are stored
/// as a system message). Opens the conversation if needed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<EventHandled, ConversationError>")]
pub struct RecordEvent {
    pub bot: Arc<BotConfig>,
    pub origin: Origin,
    pub event: String,
}

/// Drive the conversation's flows from outside: merge a payload into the session, start a
/// flow (at a step), jump to a step of the current flow, or deliver an event that starts
/// the flows listening to `event:NAME`.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<EventHandled, ConversationError>")]
pub struct ApplyPayload {
    pub bot: Option<Arc<BotConfig>>,
    /// `async` payloads: the bot's replies go to the channel's reply webhook.
    pub deliver_replies: bool,
    pub flow_id: Option<FlowId>,
    pub step: Option<String>,
    pub event: Option<String>,
    pub payload: Option<Value>,
}

/// Open a transfer by hand (`POST /v1/transfers`): pauses the bot.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<TransferChanged, ConversationError>")]
pub struct OpenTransfer {
    pub bot: Arc<BotConfig>,
    pub team_id: Option<TeamId>,
    pub notes: String,
}

/// Hand a transferred conversation back to the bot.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<TransferChanged, ConversationError>")]
pub struct ResumeTransfer {
    pub transfer_id: TransferId,
}

/// What a session PATCH asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    Open,
    Close,
    Pause,
    Resume,
}

/// Change the conversation's session status.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<SessionChanged, ConversationError>")]
pub struct SetSessionStatus {
    pub session_id: SessionId,
    pub action: SessionAction,
}

/// Close the session if its flow changed so that the step it waits at is gone (after a flow
/// was edited or deleted).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CommitTicket, ConversationError>")]
pub struct ReconcileFlow;

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
    /// The conversation's session, if it has one.
    pub session: Option<Session>,
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

/// The result of events and payloads: like `handle`, plus the engine's trace.
#[derive(Debug, Clone)]
pub struct EventHandled {
    pub conversation: Conversation,
    pub replies: Vec<Reply>,
    pub trace: Vec<String>,
    pub ticket: CommitTicket,
}

/// The result of transfer changes.
#[derive(Debug, Clone)]
pub struct TransferChanged {
    pub transfer: Transfer,
    pub ticket: CommitTicket,
}

/// The result of session changes.
#[derive(Debug, Clone)]
pub struct SessionChanged {
    pub session: Session,
    pub ticket: CommitTicket,
}

/// The actor owning one conversation.
#[derive(Debug)]
pub struct ConversationActor {
    /// The conversation this actor owns (fixed for its life).
    id: ConversationId,
    store: Store,
    /// Also holds what every actor shares: the HTTP client for `api_fetch` steps, the idle
    /// time and mailbox size (kept there, not here: 100,000 actors may be live).
    registry: Registry,
    /// Which registry entry this actor is, so a stale one never removes its successor.
    generation: u64,
    /// The conversation as last persisted; `None` until it is opened.
    conversation: Option<Conversation>,
    /// Its latest session as last persisted (boxed: most conversations have none, and an
    /// actor's size decides the allocation of every live one).
    session: Option<Box<Session>>,
    /// Its newest turns' provider ids, read from the store when first needed.
    recent: Option<RecentProviderIds>,
    /// The leaf of sled's message tree its last message went to (see `ConversationWrite`).
    leaf_hint: Cell<LeafHint>,
    /// When the last message was handled, for passivation.
    last_active: Instant,
    /// Set once the actor decided to stop; later messages are bounced to a fresh actor.
    passivated: bool,
    /// Bumped by every user message and every change of hands: an AI answer started under
    /// an older value is never accepted.
    ai_token: u64,
    /// Sync requests waiting for the pending AI answer.
    ai_waiters: Vec<tokio::sync::oneshot::Sender<Option<AiReplied>>>,
    /// Why the snapshot could not be read: every message fails (503) and the actor stops, so
    /// a store that failed a read is never mistaken for a conversation that does not exist.
    load_error: Option<String>,
}

/// Everything one turn changes, written at its end in one atomic batch.
#[derive(Debug)]
struct Turn {
    bot: Arc<BotConfig>,
    at: DateTime<Utc>,
    conversation: Conversation,
    created: bool,
    /// The contact as it stands, and whether this turn changed it.
    contact: TurnContact,
    contact_changed: bool,
    session: Option<Session>,
    session_changed: bool,
    messages: Vec<Message>,
    transfer: Option<Transfer>,
    /// The live event a transfer change publishes.
    transfer_event: Option<&'static str>,
    trace: Vec<String>,
    /// Whether [`Turn::trace`] keeps its lines.
    explain: bool,
    /// Tickets of writes made before the turn's own (a new channel).
    ticket: CommitTicket,
    /// Whether the bot was active when the turn began (a change fires webhooks and events).
    was_active: bool,
    /// Send the bot's replies to the reply webhook (async handles and payloads).
    deliver_replies: bool,
    /// Send agent messages to the reply webhook (agent replies through the API).
    deliver_agent_messages: bool,
    /// Who took over, for the human-takeover payload.
    agent: Option<AgentRef>,
    /// The AI model is to answer this turn's message (outside the turn).
    ai_requested: bool,
}

/// The conversation's contact in a turn. A turn that may change it (the provider sent contact
/// details, or the conversation is new) reads it up front; any other reads it the first time
/// it is needed (a transfer, a takeover call), which most turns never are.
#[derive(Debug)]
struct TurnContact {
    store: Store,
    id: ContactId,
    value: std::cell::OnceCell<Option<Contact>>,
}

impl TurnContact {
    fn unread(store: &Store, id: ContactId) -> Self {
        Self { store: store.clone(), id, value: std::cell::OnceCell::new() }
    }

    fn known(store: &Store, contact: Contact) -> Self {
        Self { store: store.clone(), id: contact.id, value: std::cell::OnceCell::from(Some(contact)) }
    }

    /// The contact, read now if it was not yet. A failed read leaves it out (it only names
    /// the person in a transfer or a takeover call) and is logged.
    fn get(&self) -> Option<&Contact> {
        self.value
            .get_or_init(|| {
                self.store.contact(self.id).unwrap_or_else(|error| {
                    tracing::warn!(%error, contact_id = %self.id, "could not read the contact; going on without it");
                    None
                })
            })
            .as_ref()
    }

    /// The contact if the turn has read it (a turn that changed it always has).
    fn in_hand(&self) -> Option<&Contact> {
        self.value.get().and_then(Option::as_ref)
    }
}

/// An agent as the human-takeover payload names them.
#[derive(Debug, Clone, Default)]
struct AgentRef {
    id: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

/// An `api_fetch` call the turn waits on.
#[derive(Debug)]
struct PendingFetch {
    flow: Flow,
    step: usize,
    request: FetchRequest,
}

type TurnFuture = ResponseActFuture<ConversationActor, Result<Turn, ConversationError>>;

impl Turn {
    fn message(&mut self, role: Role, content: String, message_type: &str) -> &mut Message {
        let seq = self.conversation.next_seq;
        self.conversation.next_seq += 1;
        self.conversation.last_message_at = Some(self.at);
        self.messages.push(Message::new(self.conversation.id, seq, role, content, message_type, self.at));
        self.messages.last_mut().expect("just pushed")
    }

    /// Adds a bot reply.
    fn reply(&mut self, draft: ReplyDraft) {
        let kind = match draft.whatsapp_flow {
            Some(_) => ReplyKind::WhatsappFlow,
            None => ReplyKind::for_button_count(draft.buttons.len()),
        };
        let message = self.message(Role::Assistant, draft.text, kind.as_str());
        message.buttons = draft.buttons;
        message.whatsapp_flow = draft.whatsapp_flow;
    }

    fn replies(&self) -> Vec<Reply> {
        Message::replies_among(&self.messages)
    }

    /// Notes why the turn did what it did, for the callers that return the trace (events and
    /// payloads); `handle` answers without one, so its turns format nothing.
    fn trace(&mut self, line: std::fmt::Arguments<'_>) {
        if self.explain {
            self.trace.push(line.to_string());
        }
    }

    /// The open session, started (seeded with the conversation's variables) if there is none.
    fn open_session(&mut self) -> &mut Session {
        let reuse = self.session.as_ref().is_some_and(|s| s.status != SessionStatus::Closed);
        if !reuse {
            let c = &self.conversation;
            let session = Session {
                id: SessionId::new_random(),
                tenant_id: c.tenant_id,
                conversation_id: c.id,
                contact_id: c.contact_id,
                chatbot_id: c.chatbot_id,
                current_flow_id: None,
                current_step: None,
                variables: c.variables.clone(),
                status: SessionStatus::Open,
                started_at: self.at,
                last_activity: self.at,
                closed_at: None,
            };
            self.conversation.session_id = Some(session.id);
            self.session = Some(session);
        }
        self.session_changed = true;
        self.session.as_mut().expect("session just ensured")
    }

    /// Ends the session if one is open or paused.
    fn close_session(&mut self, why: &str) {
        let at = self.at;
        if let Some(session) = self.session.as_mut().filter(|s| s.status != SessionStatus::Closed) {
            session.status = SessionStatus::Closed;
            session.closed_at = Some(at);
            session.last_activity = at;
            self.session_changed = true;
            self.trace(format_args!("session closed: {why}"));
        }
    }

    /// Hands the conversation to a human: bot off, session over.
    fn pause_bot(&mut self, why: &str) {
        self.conversation.bot_active = false;
        self.close_session(why);
    }

    /// Closes an open session that has been idle longer than the chatbot's timeout.
    fn expire_session(&mut self) {
        let minutes = self.bot.chatbot.settings.session_timeout_minutes;
        let timeout = chrono::Duration::milliseconds((minutes * 60_000.0) as i64);
        let expired = self
            .session
            .as_ref()
            .is_some_and(|s| s.status == SessionStatus::Open && self.at - s.last_activity > timeout);
        if expired {
            self.close_session("idle longer than session_timeout_minutes");
        }
    }

    /// The step the session waits at, if it still exists; a session pointing at a flow or
    /// step that was edited away or disabled is closed instead.
    fn waiting_step(&mut self) -> Option<(Flow, usize)> {
        let session = self.session.as_ref().filter(|s| s.status == SessionStatus::Open)?;
        let (flow_id, step) = (session.current_flow_id?, session.current_step.clone()?);
        let found = self
            .bot
            .rules
            .flow(flow_id)
            .filter(|f| f.enabled)
            .and_then(|f| flow::find_step(f, &step).map(|i| (f.clone(), i)));
        if found.is_none() {
            self.close_session("its flow or step no longer exists");
        }
        found
    }

    fn variables(&self) -> Map<String, Value> {
        match &self.session {
            Some(s) if s.status != SessionStatus::Closed => s.variables.clone(),
            _ => self.conversation.variables.clone(),
        }
    }

    /// Opens a transfer to `team` (general queue when `None`) and pauses the bot.
    fn open_transfer(&mut self, team: Option<TeamId>, notes: String, source: TransferSource) -> Transfer {
        let c = &self.conversation;
        let (contact_name, phone_number) = match self.contact.get() {
            Some(contact) => {
                (contact.display_name(), contact.phones.first().cloned().unwrap_or_else(|| c.provider_id.clone()))
            }
            None => (String::new(), c.provider_id.clone()),
        };
        let transfer = Transfer {
            id: TransferId::new_random(),
            tenant_id: c.tenant_id,
            chatbot_id: c.chatbot_id,
            conversation_id: c.id,
            contact_id: c.contact_id,
            contact_name,
            phone_number,
            status: TransferStatus::Active,
            source,
            agent_id: None,
            team_id: team,
            notes,
            transferred_at: self.at,
            assigned_at: None,
            resumed_at: None,
            updated_at: self.at,
        };
        self.conversation.status = ConversationStatus::Escalated;
        self.conversation.active_transfer = Some(transfer.id);
        self.pause_bot("transferred to a human");
        match team {
            Some(team) => self.trace(format_args!("transfer opened to team {team}")),
            None => self.trace(format_args!("transfer opened to the general queue")),
        }
        self.transfer = Some(transfer.clone());
        self.transfer_event = Some("transfer.created");
        transfer
    }

    /// Applies what a flow returned; the pending `api_fetch`, if any.
    fn apply_progress(&mut self, flow: &Flow, progress: Progress) -> Option<PendingFetch> {
        // Empty unless this turn explains itself (the flow was driven with `self.explain`).
        self.trace.extend(progress.trace);
        for reply in progress.replies {
            self.reply(reply);
        }
        let at = self.at;
        let session = self.open_session();
        session.last_activity = at;
        session.current_flow_id = Some(flow.id);
        match progress.position {
            Some(position) => session.current_step = flow.steps.get(position.step).map(|s| s.step_name.clone()),
            None => {
                session.current_step = None;
                let why = if progress.completed { "flow completed" } else { "flow ended" };
                self.close_session(why);
            }
        }
        if let Some(transfer) = progress.transfer {
            self.open_transfer(transfer.team_id, transfer.notes, TransferSource::Flow);
        }
        match (progress.fetch, progress.position) {
            (Some(request), Some(position)) => Some(PendingFetch { flow: flow.clone(), step: position.step, request }),
            _ => None,
        }
    }

    /// Starts `flow` (at `step`) in the open session.
    fn start_flow(&mut self, flow: &Flow, step: Option<usize>) -> Option<PendingFetch> {
        self.trace(format_args!("starting flow {:?}", flow.name));
        let mut variables = self.open_session().variables.clone();
        let progress = flow::start(flow, step, &mut variables, self.explain);
        self.open_session().variables = variables;
        self.apply_progress(flow, progress)
    }

    /// Why the bot stays silent, if it does.
    fn silenced(&self) -> Option<&'static str> {
        if !self.bot.chatbot.settings.chatbot_enabled {
            Some("chatbot disabled")
        } else if !self.conversation.bot_active {
            Some("bot paused on this conversation")
        } else if self.session.as_ref().is_some_and(|s| s.status == SessionStatus::Paused) {
            Some("session paused")
        } else {
            None
        }
    }

    /// The bot's answer to a user's text, in API.md's order.
    fn respond_to_text(&mut self, text: &str, first_message: bool) -> Option<PendingFetch> {
        if let Some(why) = self.silenced() {
            self.trace(format_args!("no reply: {why}"));
            return None;
        }
        let bot = Arc::clone(&self.bot);
        let settings = &bot.chatbot.settings;
        let waiting = self.waiting_step();
        match engine::route(&bot.rules, waiting.as_ref().map(|(f, i)| (f, *i)), text, first_message, self.at) {
            Route::FlowInput { flow, step } => {
                let mut variables = self.variables();
                let progress = flow::take_input(flow, step, text, &mut variables, self.explain);
                self.open_session().variables = variables;
                self.apply_progress(flow, progress)
            }
            Route::Transfer => {
                self.trace(format_args!("transfer keyword"));
                self.reply(ReplyDraft::new(&settings.transfer_message, &[]));
                self.open_transfer(None, format!("Transfer keyword in: {text}"), TransferSource::Keyword);
                None
            }
            Route::Closed => {
                self.trace(format_args!("outside business hours"));
                self.reply(ReplyDraft::new(&settings.business_hours.closed_message, &[]));
                None
            }
            Route::StartFlow(flow) => self.start_flow(flow, None),
            Route::Ai => {
                self.trace(format_args!("the AI model answers"));
                self.ai_requested = true;
                None
            }
            Route::Reply(decision) => {
                self.trace(format_args!("{:?}", decision.reason));
                for reply in decision.replies {
                    self.reply(reply);
                }
                if decision.pause_bot {
                    self.pause_bot("transfer");
                }
                None
            }
        }
    }
}

impl ConversationActor {
    /// Builds the actor from the conversation's snapshot in `store`.
    pub(crate) fn load(id: ConversationId, store: Store, registry: Registry, generation: u64) -> Self {
        let (conversation, session, load_error) = match load_snapshot(&store, id) {
            Ok((conversation, session)) => (conversation, session.map(Box::new), None),
            Err(error) => {
                tracing::error!(%error, conversation_id = %id, "could not load conversation snapshot");
                (None, None, Some(error.to_string()))
            }
        };
        Self {
            id,
            store,
            registry,
            generation,
            conversation,
            session,
            recent: None,
            leaf_hint: Default::default(),
            last_active: Instant::now(),
            passivated: false,
            ai_token: 0,
            ai_waiters: Vec::new(),
            load_error,
        }
    }

    fn passivate(&mut self, ctx: &mut Context<Self>) {
        self.passivated = true;
        self.registry.forget(self.id, self.generation);
        ctx.stop();
    }

    /// Common start of every message: bounce if passivated, fail if the snapshot could not be
    /// read, note activity.
    fn begin(&mut self) -> Result<(), ConversationError> {
        if self.passivated {
            return Err(ConversationError::Passivated);
        }
        if let Some(error) = &self.load_error {
            let error = std::io::Error::other(format!("could not load the conversation: {error}"));
            return Err(ConversationError::Store(StoreError::Io(error)));
        }
        self.last_active = Instant::now();
        Ok(())
    }

    /// Runs one request's step so that a panic or a store error in it fails only that
    /// request, and the actor is rebuilt from the store before the next.
    fn guarded<T>(
        &mut self,
        ctx: &mut Context<Self>,
        step: impl FnOnce(&mut Self, &mut Context<Self>) -> Result<T, ConversationError>,
    ) -> Result<T, ConversationError> {
        match catch_unwind(AssertUnwindSafe(|| step(self, ctx))) {
            Ok(result) => self.settle(ctx, result),
            Err(panic) => Err(self.panicked(ctx, panic)),
        }
    }

    /// Runs a step no request waits for (an AI answer arriving) guarded like a request's.
    fn in_background(&mut self, ctx: &mut Context<Self>, step: impl FnOnce(&mut Self, &mut Context<Self>)) {
        // A failure was logged and handled by the guard; nobody waits for the result.
        let _ = self.guarded(ctx, |actor, ctx| {
            step(actor, ctx);
            Ok(())
        });
    }

    /// A turn that may await (an `api_fetch` step), guarded like [`ConversationActor::guarded`]
    /// in every step, `start` included. Everything runs inside the response future, so the
    /// answer is delivered before a failure stops the actor.
    fn guarded_turn<T: 'static>(
        start: impl FnOnce(&mut Self) -> ResponseActFuture<Self, Result<T, ConversationError>> + 'static,
    ) -> AtomicResponse<Self, Result<T, ConversationError>> {
        AtomicResponse::new(Box::pin(Self::guarded_future(start)))
    }

    /// The future of [`ConversationActor::guarded_turn`], for a handler that does more with
    /// the turn's result than return it.
    fn guarded_future<T: 'static>(
        start: impl FnOnce(&mut Self) -> ResponseActFuture<Self, Result<T, ConversationError>> + 'static,
    ) -> Guarded<T> {
        let turn = fut::ready(()).then(move |(), actor: &mut Self, _ctx| start(actor));
        Guarded { turn: Some(Box::pin(turn)) }
    }

    /// After a step: a store error may have left this actor's memory ahead of or behind the
    /// store, so the actor stops and the next message rebuilds it from what is stored.
    fn settle<T>(
        &mut self,
        ctx: &mut Context<Self>,
        result: Result<T, ConversationError>,
    ) -> Result<T, ConversationError> {
        if let Err(ConversationError::Store(error)) = &result {
            tracing::warn!(%error, conversation_id = %self.id, "store error; the conversation restarts from the store");
            if !self.passivated {
                self.passivate(ctx);
            }
        }
        result
    }

    /// Logs a panic in a turn and stops the actor (the next message rebuilds it from the
    /// store); the error the request answers with.
    fn panicked(&mut self, ctx: &mut Context<Self>, panic: Box<dyn std::any::Any + Send>) -> ConversationError {
        let message = panic_message(panic.as_ref()).to_string();
        tracing::error!(
            conversation_id = %self.id,
            panic = %message,
            "a turn panicked; nothing of it was stored and the conversation restarts from the store"
        );
        if !self.passivated {
            self.passivate(ctx);
        }
        ConversationError::Panicked(message)
    }

    fn existing(&self) -> Result<&Conversation, ConversationError> {
        self.conversation.as_ref().ok_or(ConversationError::NotFound)
    }

    /// A turn on the existing conversation.
    fn turn(&self, bot: Arc<BotConfig>) -> Result<Turn, ConversationError> {
        let contact = TurnContact::unread(&self.store, self.existing()?.contact_id);
        self.turn_with(bot, contact)
    }

    fn turn_with(&self, bot: Arc<BotConfig>, contact: TurnContact) -> Result<Turn, ConversationError> {
        let conversation = self.existing()?.clone();
        let mut turn = Turn {
            bot,
            at: now(),
            conversation,
            created: false,
            contact,
            contact_changed: false,
            session: self.session.as_deref().cloned(),
            session_changed: false,
            messages: Vec::new(),
            transfer: None,
            transfer_event: None,
            trace: Vec::new(),
            explain: true,
            ticket: CommitTicket::NONE,
            was_active: self.conversation.as_ref().is_some_and(|c| c.bot_active),
            deliver_replies: false,
            deliver_agent_messages: false,
            agent: None,
            ai_requested: false,
        };
        turn.expire_session();
        Ok(turn)
    }

    /// A turn that opens the conversation (with its channel and contact) if needed.
    fn open(&self, bot: Arc<BotConfig>, origin: &Origin) -> Result<Turn, ConversationError> {
        if self.conversation.is_some() && origin.contact.is_none() {
            // Nothing to merge into the contact: it is read only if the turn needs it.
            return self.turn(bot);
        }
        let at = now();
        let chatbot = &bot.chatbot;
        let contact_id = ContactId::derive(chatbot.id, &origin.provider_id);
        let existing_contact = self.store.contact(contact_id)?;
        let merged = merge_contact(existing_contact.as_ref(), contact_id, &bot, origin);
        let contact_changed = merged.is_some() || existing_contact.is_none();
        let contact = merged.or(existing_contact).unwrap_or_else(|| new_contact(contact_id, &bot, origin));
        if self.conversation.is_some() {
            let mut turn = self.turn_with(bot, TurnContact::known(&self.store, contact))?;
            turn.contact_changed = contact_changed;
            return Ok(turn);
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
            session_id: None,
            active_transfer: None,
            epoch: 0,
            created_at: at,
            updated_at: at,
        };
        Ok(Turn {
            bot,
            at,
            conversation,
            created: true,
            contact: TurnContact::known(&self.store, contact),
            contact_changed,
            session: None,
            session_changed: false,
            messages: Vec::new(),
            transfer: None,
            transfer_event: None,
            trace: Vec::new(),
            explain: true,
            ticket,
            was_active: true,
            deliver_replies: false,
            deliver_agent_messages: false,
            agent: None,
            ai_requested: false,
        })
    }

    /// Writes a turn (with the webhook calls it causes) and, once written, makes it the
    /// actor's state and tells the live subscribers.
    fn commit(
        &mut self,
        turn: &mut Turn,
        dedupe: Option<(&str, &HandleOutcome)>,
    ) -> Result<CommitTicket, ConversationError> {
        if let Some(trigger) = self.registry.panic_on_text() {
            if turn.messages.iter().any(|m| m.content == trigger) {
                panic!("test fault injection: a message with the panic_on_text text");
            }
        }
        turn.conversation.updated_at = turn.at;
        let paused = turn.was_active && !turn.conversation.bot_active;
        let resumed = !turn.was_active && turn.conversation.bot_active;
        if paused || resumed {
            // Ownership changed hands: bot replies made before this are never delivered, and
            // an AI answer still being computed is never accepted.
            turn.conversation.epoch += 1;
        }
        let deliveries = self.deliveries(turn, paused)?;
        let first = turn.messages.first().map(|m| (m.provider_message_id.clone(), m.seq));
        if turn.created {
            self.recent = Some(RecentProviderIds::new_conversation());
        }
        let leaving_window = match first {
            Some(_) => self.recent_provider_ids()?.leaving().map(|seq| (seq, turn.conversation.contact_id)),
            None => None,
        };
        let ticket = self.store.write_conversation(&ConversationWrite {
            conversation: (!self.follows_from_messages(turn)).then_some(&turn.conversation),
            created: turn.created,
            contact: turn.contact.in_hand().filter(|_| turn.contact_changed),
            messages: &turn.messages,
            dedupe,
            session: turn.session.as_ref().filter(|_| turn.session_changed),
            transfer: turn.transfer.as_ref(),
            deliveries: &deliveries,
            leaving_window,
            leaf_hint: Some(&self.leaf_hint),
        })?;
        if let (Some((provider_message_id, seq)), Some(recent)) = (first, self.recent.as_mut()) {
            recent.remember(provider_message_id.as_deref(), seq);
        }
        self.conversation = Some(turn.conversation.clone());
        self.session = turn.session.clone().map(Box::new);
        if paused || resumed {
            // Only now, with the change written, so whoever waited reads the new state.
            self.supersede_ai();
        }
        self.publish(turn, paused, resumed);
        if !deliveries.is_empty() {
            self.registry.wake_outbox();
        }
        Ok(ticket.max(turn.ticket))
    }

    /// The window of the conversation's newest turns and their provider ids ([`recent`]),
    /// read from the store on first use.
    fn recent_provider_ids(&mut self) -> Result<&mut RecentProviderIds, ConversationError> {
        if self.recent.is_none() {
            let next_seq = self.conversation.as_ref().map_or(1, |c| c.next_seq);
            self.recent = Some(self.store.recent_provider_ids(self.id, next_seq)?);
        }
        Ok(self.recent.get_or_insert_with(RecentProviderIds::new_conversation))
    }

    /// Whether the turn changed nothing in the conversation record but what the store derives
    /// from its newest message (`next_seq`, `last_message_at`, `updated_at`), so the record
    /// need not be rewritten: the common turn, a message and its replies.
    fn follows_from_messages(&self, turn: &Turn) -> bool {
        let (Some(before), Some(newest)) = (self.conversation.as_ref(), turn.messages.last()) else { return false };
        let after = &turn.conversation;
        if turn.created
            || after.next_seq != newest.seq + 1
            || after.last_message_at != Some(newest.created_at)
            || after.updated_at != newest.created_at
        {
            return false;
        }
        let mut unchanged = before.clone();
        unchanged.next_seq = after.next_seq;
        unchanged.last_message_at = after.last_message_at;
        unchanged.updated_at = after.updated_at;
        unchanged == *after
    }

    /// The webhook calls a turn causes: replies and agent messages to the reply webhook, and
    /// the human-takeover call when the bot was paused.
    fn deliveries(&self, turn: &Turn, paused: bool) -> Result<Vec<Delivery>, ConversationError> {
        let c = &turn.conversation;
        let to_reply_webhook = |m: &&Message| {
            (m.role == Role::Assistant && turn.deliver_replies)
                || (m.role == Role::Agent && turn.deliver_agent_messages)
        };
        let replies: Vec<&Message> = turn.messages.iter().filter(to_reply_webhook).collect();
        if replies.is_empty() && !paused {
            return Ok(Vec::new());
        }
        let Some(channel) = self.store.channel(c.chatbot_id, &c.channel_id)? else { return Ok(Vec::new()) };
        let delivery =
            |kind, url: &str, method, headers: &std::collections::BTreeMap<String, String>, body, secret, seq| {
                Delivery {
                    id: DeliveryId::new_random(),
                    tenant_id: c.tenant_id,
                    chatbot_id: c.chatbot_id,
                    conversation_id: c.id,
                    channel_id: c.channel_id.clone(),
                    kind,
                    url: url.to_string(),
                    method,
                    headers: headers.clone(),
                    body,
                    secret,
                    epoch: c.epoch,
                    seq,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    next_attempt_at: turn.at,
                    last_status: None,
                    last_error: None,
                    created_at: turn.at,
                    updated_at: turn.at,
                    delivered_at: None,
                }
            };
        let mut out = Vec::new();
        if let Some(hook) = &channel.reply_webhook {
            for message in replies {
                let kind =
                    if message.role == Role::Assistant { DeliveryKind::BotReply } else { DeliveryKind::AgentMessage };
                let body = reply_payload(c, message);
                out.push(delivery(kind, &hook.url, hook.method, &hook.headers, body, hook.secret.clone(), message.seq));
            }
        }
        if let (true, Some(hook)) = (paused, &channel.human_takeover_webhook) {
            let body = takeover_payload(c, &channel, turn.contact.get(), turn.agent.as_ref(), &hook.body, turn.at);
            out.push(delivery(DeliveryKind::HumanTakeover, &hook.url, hook.method, &hook.headers, body, None, 0));
        }
        Ok(out)
    }

    /// Tells live subscribers what the turn changed.
    fn publish(&self, turn: &Turn, paused: bool, resumed: bool) {
        let events = self.registry.events();
        let (tenant, c, at) = (turn.conversation.tenant_id, &turn.conversation, turn.at);
        for message in &turn.messages {
            events.publish(
                tenant,
                "message.created",
                || serde_json::json!({ "conversation_id": c.id, "message": message }),
                at,
            );
        }
        if paused {
            let agent = turn.agent.as_ref().and_then(|a| a.id.clone());
            events.publish(
                tenant,
                "bot.paused",
                || serde_json::json!({ "conversation_id": c.id, "agent_id": agent }),
                at,
            );
        }
        if resumed {
            events.publish(tenant, "bot.resumed", || serde_json::json!({ "conversation_id": c.id }), at);
        }
        if let (Some(kind), Some(transfer)) = (turn.transfer_event, &turn.transfer) {
            events.publish(tenant, kind, || serde_json::json!({ "transfer": transfer }), at);
        }
        if turn.session_changed {
            events.publish(tenant, "session.updated", || serde_json::json!({ "session": turn.session }), at);
        }
        events.publish(tenant, "conversation.updated", || conversation_event(c), at);
    }

    /// Runs pending `api_fetch` calls one after another, feeding each answer to the flow.
    fn drive(&mut self, mut turn: Turn, pending: Option<PendingFetch>) -> TurnFuture {
        let Some(PendingFetch { flow, step, request }) = pending else {
            return Box::pin(fut::ready(Ok(turn)));
        };
        turn.trace(format_args!("api_fetch {} {}", request.method, request.url));
        let call = fetch(self.registry.http().clone(), request);
        Box::pin(call.into_actor(self).then(move |outcome, actor, _ctx| {
            if let FetchOutcome::Failed(why) = &outcome {
                turn.trace(format_args!("api_fetch failed: {why}"));
                tracing::warn!(conversation_id = %turn.conversation.id, error = %why, "api_fetch step failed");
            }
            let fallback = turn.bot.chatbot.settings.fallback_message.clone();
            let mut variables = turn.variables();
            let progress = flow::take_fetch(&flow, step, outcome, &mut variables, &fallback, turn.explain);
            turn.open_session().variables = variables;
            let next = turn.apply_progress(&flow, progress);
            actor.drive(turn, next)
        }))
    }

    /// Finishes an event-like turn: write and answer.
    fn finish_event(&mut self, mut turn: Turn) -> Result<EventHandled, ConversationError> {
        let ticket = self.commit(&mut turn, None)?;
        Ok(EventHandled { replies: turn.replies(), trace: turn.trace, conversation: turn.conversation, ticket })
    }

    /// Drops the pending AI answer: its waiters get `None` and its result will be ignored.
    fn supersede_ai(&mut self) {
        self.ai_token += 1;
        for waiter in self.ai_waiters.drain(..) {
            let _ = waiter.send(None);
        }
    }

    /// Starts the AI answer to `job` after the chatbot's debounce (a newer message within it
    /// supersedes this one, so a burst gets one answer). Returns what a sync request awaits.
    fn request_ai(
        &mut self,
        ctx: &mut Context<Self>,
        job: AiJob,
    ) -> Option<tokio::sync::oneshot::Receiver<Option<AiReplied>>> {
        let waiter = if job.deliver_replies {
            None
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.ai_waiters.push(tx);
            Some(rx)
        };
        let debounce = Duration::from_millis(job.bot.chatbot.settings.ai_debounce_ms);
        if debounce.is_zero() {
            self.call_ai(ctx, job);
        } else {
            ctx.run_later(debounce, move |actor, ctx| {
                if actor.ai_token == job.token {
                    actor.in_background(ctx, |actor, ctx| actor.call_ai(ctx, job));
                }
            });
        }
        waiter
    }

    /// Calls the model without holding the actor: the mailbox keeps being served meanwhile.
    fn call_ai(&mut self, ctx: &mut Context<Self>, job: AiJob) {
        self.last_active = Instant::now();
        let Some(ai) = self.registry.ai().cloned() else {
            self.accept_ai(job, Err(crate::ai::AiError::Request("no AI service is configured".into())), Duration::ZERO);
            return;
        };
        let history = self.store.recent_messages(self.id, ai.config().history_messages + 1).unwrap_or_else(|error| {
            tracing::warn!(%error, conversation_id = %self.id, "could not read the history for the AI model");
            Vec::new()
        });
        let (settings, contexts, text) =
            (job.bot.chatbot.settings.clone(), job.bot.ai_contexts.clone(), job.user_text.clone());
        let started = Instant::now();
        let call = async move { ai.reply(&settings, &contexts, &history, &text).await };
        ctx.spawn(call.into_actor(self).map(move |result, actor, ctx| {
            actor.in_background(ctx, |actor, _ctx| actor.accept_ai(job, result, started.elapsed()));
        }));
    }

    /// Takes the model's answer into the conversation unless it was superseded meanwhile; a
    /// failed call answers with the fallback message (and is recorded), never an error.
    fn accept_ai(&mut self, job: AiJob, result: Result<crate::ai::AiAnswer, crate::ai::AiError>, took: Duration) {
        self.registry.record_ai(took, result.is_ok());
        self.last_active = Instant::now();
        if self.passivated || self.ai_token != job.token {
            return;
        }
        let mut turn = match self.turn(Arc::clone(&job.bot)) {
            Ok(turn) => turn,
            Err(error) => {
                tracing::error!(%error, conversation_id = %self.id, "could not record the AI answer");
                return self.supersede_ai();
            }
        };
        turn.deliver_replies = job.deliver_replies;
        match result {
            Ok(answer) if !answer.text.trim().is_empty() => {
                turn.trace(format_args!("AI answered ({} tokens)", answer.tokens_used.unwrap_or(0)));
                turn.reply(ReplyDraft::new(answer.text.trim(), &[]));
                if let Some(message) = turn.messages.last_mut() {
                    message.tokens_used = answer.tokens_used;
                }
            }
            failed => {
                let why = match failed {
                    Err(error) => error.to_string(),
                    Ok(_) => "the model answered with nothing".to_string(),
                };
                tracing::warn!(conversation_id = %self.id, error = %why, "AI call failed; answering with the fallback");
                turn.trace(format_args!("AI failed: {why}"));
                let fallback = engine::default_reply(&job.bot.rules, false);
                for reply in fallback.replies {
                    turn.reply(reply);
                }
            }
        }
        let outcome = HandleOutcome {
            conversation_id: self.id,
            contact_id: turn.conversation.contact_id,
            message_id: job.user_message,
            bot_active: turn.conversation.bot_active,
            replies: turn.replies(),
        };
        let dedupe = job.provider_message_id.as_deref().map(|p| (p, &outcome));
        let replied = match self.commit(&mut turn, dedupe) {
            Ok(ticket) => Some(AiReplied { replies: outcome.replies.clone(), bot_active: outcome.bot_active, ticket }),
            Err(error) => {
                tracing::error!(%error, conversation_id = %self.id, "could not store the AI answer");
                None
            }
        };
        for waiter in self.ai_waiters.drain(..) {
            let _ = waiter.send(replied.clone());
        }
    }

    /// The agent named by an `agent_id`, as far as the tenant knows them.
    fn agent_ref(&self, agent_id: Option<&str>) -> Option<AgentRef> {
        let raw = agent_id?.trim();
        let tenant = self.conversation.as_ref()?.tenant_id;
        let known = raw.parse().ok().and_then(|id| self.store.agent(tenant, id).ok().flatten());
        Some(match known {
            Some(agent) => {
                AgentRef { id: Some(agent.id.to_string()), name: Some(agent.name), email: Some(agent.email) }
            }
            None => AgentRef { id: Some(raw.to_string()), name: None, email: None },
        })
    }

    fn changed(&self, created: bool, ticket: CommitTicket) -> Result<Changed, ConversationError> {
        Ok(Changed {
            conversation: self.existing()?.clone(),
            session: self.session.as_deref().cloned(),
            created,
            ticket,
        })
    }
}

/// A turn's future whose steps fail its request, not the actor's task, when they panic; a
/// store error at its end restarts the actor like in [`ConversationActor::guarded`].
struct Guarded<T> {
    /// `None` once it has answered: a future that panicked is never polled again.
    turn: Option<ResponseActFuture<ConversationActor, Result<T, ConversationError>>>,
}

impl<T> ActorFuture<ConversationActor> for Guarded<T> {
    type Output = Result<T, ConversationError>;

    fn poll(
        mut self: Pin<&mut Self>,
        actor: &mut ConversationActor,
        ctx: &mut Context<ConversationActor>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let Some(turn) = self.turn.as_mut() else { return Poll::Pending };
        match catch_unwind(AssertUnwindSafe(|| turn.as_mut().poll(actor, ctx, task))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => {
                self.turn = None;
                Poll::Ready(actor.settle(ctx, result))
            }
            Err(panic) => {
                self.turn = None;
                Poll::Ready(Err(actor.panicked(ctx, panic)))
            }
        }
    }
}

/// What a panic said, when it said it with a string.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (None, Some(message)) => message,
        (None, None) => "a panic without a message",
    }
}

fn load_snapshot(store: &Store, id: ConversationId) -> Result<(Option<Conversation>, Option<Session>), StoreError> {
    let conversation = store.conversation(id)?;
    let session = match conversation.as_ref().and_then(|c| c.session_id) {
        Some(session) => store.session(session)?,
        None => None,
    };
    Ok((conversation, session))
}

/// A conversation as live events show it.
fn conversation_event(c: &Conversation) -> Value {
    serde_json::json!({
        "id": c.id,
        "chatbot_id": c.chatbot_id,
        "channel_id": c.channel_id,
        "contact_id": c.contact_id,
        "provider_id": c.provider_id,
        "status": c.status,
        "bot_active": c.bot_active,
        "last_message_at": c.last_message_at,
        "updated_at": c.updated_at,
    })
}

/// What the reply webhook receives for one message.
fn reply_payload(c: &Conversation, m: &Message) -> Value {
    serde_json::json!({
        "event": "message",
        "conversation_id": c.id,
        "chatbot_id": c.chatbot_id,
        "channel_id": c.channel_id,
        "provider_id": c.provider_id,
        "message": {
            "id": m.id,
            "seq": m.seq,
            "role": m.role,
            "type": m.message_type,
            "text": m.content,
            "buttons": m.buttons,
            "whatsapp_flow": m.whatsapp_flow,
            "agent_id": m.agent_id,
            "created_at": m.created_at,
        },
        "timestamp": m.created_at,
    })
}

/// The human-takeover payload of seed `000`, with the channel's custom body merged over it
/// (custom keys win).
fn takeover_payload(
    c: &Conversation,
    channel: &Channel,
    contact: Option<&Contact>,
    agent: Option<&AgentRef>,
    custom: &Map<String, Value>,
    at: DateTime<Utc>,
) -> Value {
    let agent = agent.cloned().unwrap_or_default();
    let mut payload = serde_json::json!({
        "event": "human_takeover",
        "conversation_id": c.id,
        "channel_account_id": channel.id,
        "channel_name": channel.name,
        "agent": { "id": agent.id, "name": agent.name, "email": agent.email },
        "contact": {
            "id": c.contact_id,
            "first_name": contact.map(|k| k.first_name.clone()),
            "last_name": contact.map(|k| k.last_name.clone()),
            "phones": contact.map(|k| k.phones.clone()).unwrap_or_default(),
            "emails": contact.map(|k| k.emails.clone()).unwrap_or_default(),
        },
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Value::Object(fields) = &mut payload {
        for (key, value) in custom {
            fields.insert(key.clone(), value.clone());
        }
    }
    payload
}

/// Performs an `api_fetch` call with its timeout; any failure is an outcome, never an error.
async fn fetch(client: reqwest::Client, request: FetchRequest) -> FetchOutcome {
    let method = match reqwest::Method::from_bytes(request.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return FetchOutcome::Failed(format!("bad method {}", request.method)),
    };
    let mut builder = client.request(method, &request.url).timeout(request.timeout);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return FetchOutcome::Failed("timed out".into()),
        Err(e) => return FetchOutcome::Failed(format!("request failed: {e}")),
    };
    let status = response.status();
    if !status.is_success() {
        return FetchOutcome::Failed(format!("HTTP {status}"));
    }
    if response.content_length().is_some_and(|n| n as usize > MAX_FETCH_BODY) {
        return FetchOutcome::Failed("answer too large".into());
    }
    match response.bytes().await {
        Ok(bytes) if bytes.len() <= MAX_FETCH_BODY => match serde_json::from_slice(&bytes) {
            Ok(value) => FetchOutcome::Json(value),
            Err(_) => FetchOutcome::Failed("answer is not JSON".into()),
        },
        Ok(_) => FetchOutcome::Failed("answer too large".into()),
        Err(e) if e.is_timeout() => FetchOutcome::Failed("timed out".into()),
        Err(e) => FetchOutcome::Failed(format!("reading the answer failed: {e}")),
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

impl Actor for ConversationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.registry.mailbox_capacity());
        self.registry.actor_started();
        let idle_after = self.registry.idle_passivate();
        let check_every = (idle_after / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
        ctx.run_interval(check_every, move |actor, ctx| {
            if actor.last_active.elapsed() >= idle_after {
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
    type Result = AtomicResponse<Self, Result<Handled, ConversationError>>;

    fn handle(&mut self, msg: HandleIncoming, _ctx: &mut Self::Context) -> Self::Result {
        Self::guarded_turn(move |actor| actor.run_incoming(msg))
    }
}

impl Handler<HandleDurably> for ConversationActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: HandleDurably, _ctx: &mut Self::Context) -> Self::Result {
        let HandleDurably { incoming, reply, in_flight } = msg;
        let turn = Self::guarded_future(move |actor| actor.run_incoming(incoming));
        AtomicResponse::new(Box::pin(turn.map(move |result, actor: &mut Self, _ctx| {
            drop(in_flight);
            match result {
                Ok(handled) => actor.store.when_durable(handled.ticket, move |durable| {
                    // The request may have gone (its client hung up); the turn stands.
                    let _ = reply.send(durable.map(|()| handled).map_err(ConversationError::from));
                }),
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
        })))
    }
}

impl ConversationActor {
    #[tracing::instrument(level = "debug", skip_all, fields(conversation_id = %self.id))]
    fn run_incoming(&mut self, msg: HandleIncoming) -> ResponseActFuture<Self, Result<Handled, ConversationError>> {
        match self.start_incoming(msg) {
            Err(error) => Box::pin(fut::ready(Err(error))),
            Ok(Incoming::Duplicate(handled)) => Box::pin(fut::ready(Ok(handled))),
            Ok(Incoming::Run { turn, pending, user_message, user_text, provider_message_id }) => {
                Box::pin(self.drive(turn, pending).map(move |turn, actor, ctx| {
                    let mut turn = turn?;
                    let outcome = HandleOutcome {
                        conversation_id: turn.conversation.id,
                        contact_id: turn.conversation.contact_id,
                        message_id: user_message,
                        bot_active: turn.conversation.bot_active,
                        replies: turn.replies(),
                    };
                    let ticket = actor.commit(&mut turn, provider_message_id.as_deref().map(|p| (p, &outcome)))?;
                    let ai_reply = if turn.ai_requested {
                        let job = AiJob {
                            token: actor.ai_token,
                            bot: Arc::clone(&turn.bot),
                            user_text: user_text.clone(),
                            user_message,
                            provider_message_id: provider_message_id.clone(),
                            deliver_replies: turn.deliver_replies,
                        };
                        actor.request_ai(ctx, job)
                    } else {
                        None
                    };
                    Ok(Handled { outcome, duplicate: false, ticket, ai_reply })
                }))
            }
        }
    }
}

/// How an incoming message starts. Built once per message and consumed at once, so the
/// size difference between its variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Incoming {
    Duplicate(Handled),
    Run {
        turn: Turn,
        pending: Option<PendingFetch>,
        user_message: MessageId,
        user_text: String,
        provider_message_id: Option<String>,
    },
}

impl ConversationActor {
    fn start_incoming(&mut self, msg: HandleIncoming) -> Result<Incoming, ConversationError> {
        self.begin()?;
        let HandleIncoming { bot, origin, message, deliver_replies } = msg;
        let contact = self.conversation.as_ref().map(|c| c.contact_id);
        if let (Some(pmid), Some(contact)) = (&message.provider_message_id, contact) {
            let earlier = match self.recent_provider_ids()?.earlier(pmid) {
                Earlier::None => None,
                Earlier::Look(in_turn) => self.store.dedupe(self.id, contact, pmid, in_turn)?,
            };
            if let Some(outcome) = earlier {
                // The first answer may still be on its way to disk; wait for it too.
                return Ok(Incoming::Duplicate(Handled {
                    outcome,
                    duplicate: true,
                    ticket: self.store.ticket_for_all(),
                    ai_reply: None,
                }));
            }
        }
        let mut turn = self.open(bot, &origin)?;
        turn.explain = false;
        turn.deliver_replies = deliver_replies;
        if !message.from_me {
            // A newer message supersedes an AI answer still being computed for an older one.
            self.supersede_ai();
        }
        let first_message = turn.conversation.next_seq == 1;
        let role = if message.from_me { Role::Agent } else { Role::User };
        let user_message = turn.message(role, message.text.clone(), &message.message_type);
        user_message.provider_message_id = message.provider_message_id.clone();
        let user_message = user_message.id;
        let pending = if message.from_me {
            if turn.bot.chatbot.settings.auto_pause_on_agent_message {
                turn.pause_bot("a human answered from the phone");
            }
            None
        } else {
            turn.respond_to_text(&message.text, first_message)
        };
        Ok(Incoming::Run {
            turn,
            pending,
            user_message,
            user_text: message.text,
            provider_message_id: message.provider_message_id,
        })
    }
}

impl Handler<OpenConversation> for ConversationActor {
    type Result = Result<Changed, ConversationError>;

    fn handle(&mut self, msg: OpenConversation, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.open_conversation(msg))
    }
}

impl ConversationActor {
    fn open_conversation(&mut self, msg: OpenConversation) -> Result<Changed, ConversationError> {
        self.begin()?;
        let mut turn = self.open(msg.bot, &msg.origin)?;
        if !turn.created && !turn.contact_changed {
            return self.changed(false, CommitTicket::NONE);
        }
        let created = turn.created;
        let ticket = self.commit(&mut turn, None)?;
        self.changed(created, ticket)
    }
}

impl Handler<SetBotActive> for ConversationActor {
    type Result = Result<Changed, ConversationError>;

    #[tracing::instrument(level = "debug", skip_all, fields(conversation_id = %self.id, active = msg.active))]
    fn handle(&mut self, msg: SetBotActive, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.set_bot_active(msg))
    }
}

impl ConversationActor {
    fn set_bot_active(&mut self, msg: SetBotActive) -> Result<Changed, ConversationError> {
        self.begin()?;
        let conversation = self.existing()?.clone();
        let bot = self.registry.bot_config(conversation.chatbot_id)?;
        let mut turn = self.turn(bot)?;
        turn.agent = self.agent_ref(msg.agent_id.as_deref());
        if msg.active {
            turn.conversation.bot_active = true;
        } else {
            turn.pause_bot("bot paused by an agent");
        }
        let ticket = self.commit(&mut turn, None)?;
        self.changed(false, ticket)
    }
}

impl Handler<UpdateConversation> for ConversationActor {
    type Result = Result<Changed, ConversationError>;

    fn handle(&mut self, msg: UpdateConversation, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.update_conversation(msg))
    }
}

impl ConversationActor {
    fn update_conversation(&mut self, msg: UpdateConversation) -> Result<Changed, ConversationError> {
        self.begin()?;
        let conversation = self.existing()?.clone();
        let bot = self.registry.bot_config(conversation.chatbot_id)?;
        let mut turn = self.turn(bot)?;
        if let Some(status) = msg.status {
            turn.conversation.status = status;
        }
        if let Some(variables) = msg.variables {
            turn.conversation.variables.extend(variables.clone());
            if let Some(session) = turn.session.as_mut().filter(|s| s.status != SessionStatus::Closed) {
                session.variables.extend(variables);
                turn.session_changed = true;
            }
        }
        if let Some(metadata) = msg.metadata {
            turn.conversation.metadata = metadata;
        }
        let ticket = self.commit(&mut turn, None)?;
        self.changed(false, ticket)
    }
}

impl Handler<PostAgentMessage> for ConversationActor {
    type Result = Result<AgentMessagePosted, ConversationError>;

    fn handle(&mut self, msg: PostAgentMessage, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.post_agent_message(msg))
    }
}

impl ConversationActor {
    fn post_agent_message(&mut self, msg: PostAgentMessage) -> Result<AgentMessagePosted, ConversationError> {
        self.begin()?;
        let mut turn = self.turn(msg.bot)?;
        turn.deliver_agent_messages = true;
        turn.agent = self.agent_ref(msg.agent_id.as_deref());
        let message = turn.message(Role::Agent, msg.content, "text");
        message.agent_id = msg.agent_id;
        let message = message.clone();
        if turn.bot.chatbot.settings.auto_pause_on_agent_message {
            turn.pause_bot("an agent answered");
        }
        let ticket = self.commit(&mut turn, None)?;
        Ok(AgentMessagePosted { message, conversation: turn.conversation, ticket })
    }
}

impl Handler<RecordEvent> for ConversationActor {
    type Result = Result<EventHandled, ConversationError>;

    fn handle(&mut self, msg: RecordEvent, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.record_event(msg))
    }
}

impl ConversationActor {
    fn record_event(&mut self, msg: RecordEvent) -> Result<EventHandled, ConversationError> {
        self.begin()?;
        let mut turn = self.open(msg.bot, &msg.origin)?;
        if msg.event == "user_seen_message" {
            turn.conversation.last_seen_at = Some(turn.at);
            turn.trace(format_args!("last_seen_at updated"));
        } else {
            turn.message(Role::System, msg.event.clone(), "event");
            turn.trace(format_args!("event {:?} recorded", msg.event));
        }
        self.finish_event(turn)
    }
}

impl Handler<ApplyPayload> for ConversationActor {
    type Result = AtomicResponse<Self, Result<EventHandled, ConversationError>>;

    fn handle(&mut self, msg: ApplyPayload, _ctx: &mut Self::Context) -> Self::Result {
        Self::guarded_turn(move |actor| match actor.start_payload(msg) {
            Err(error) => Box::pin(fut::ready(Err(error))),
            Ok((turn, pending)) => {
                Box::pin(actor.drive(turn, pending).map(|turn, actor, _ctx| actor.finish_event(turn?)))
            }
        })
    }
}

impl ConversationActor {
    fn start_payload(&mut self, msg: ApplyPayload) -> Result<(Turn, Option<PendingFetch>), ConversationError> {
        self.begin()?;
        let conversation = self.existing()?;
        let bot = match msg.bot {
            Some(bot) => bot,
            None => self.registry.bot_config(conversation.chatbot_id)?,
        };
        let mut turn = self.turn(bot)?;
        turn.deliver_replies = msg.deliver_replies;
        if let Some(payload) = msg.payload {
            let session = turn.open_session();
            match payload {
                Value::Object(fields) => session.variables.extend(fields),
                other => {
                    session.variables.insert("event_payload".into(), other);
                }
            }
            turn.trace(format_args!("payload merged into the session variables"));
        }
        if let Some(why) = turn.silenced() {
            turn.trace(format_args!("no flow runs: {why}"));
            return Ok((turn, None));
        }
        let bot = Arc::clone(&turn.bot);
        let pending = if let Some(flow_id) = msg.flow_id {
            let flow = bot.rules.flow(flow_id).ok_or(ConversationError::Missing("flow"))?;
            let step = match &msg.step {
                Some(step) => Some(flow::find_step(flow, step).ok_or(ConversationError::Missing("step"))?),
                None => None,
            };
            turn.start_flow(flow, step)
        } else if let Some(step) = &msg.step {
            let flow_id = turn
                .session
                .as_ref()
                .filter(|s| s.status != SessionStatus::Closed)
                .and_then(|s| s.current_flow_id)
                .ok_or_else(|| ConversationError::Conflict("stepId without flowId needs a flow in progress".into()))?;
            let flow = bot.rules.flow(flow_id).ok_or(ConversationError::Missing("flow"))?;
            let index = flow::find_step(flow, step).ok_or(ConversationError::Missing("step"))?;
            turn.start_flow(flow, Some(index))
        } else if let Some(event) = &msg.event {
            match flow::triggered_by_event(&bot.rules.flows, event) {
                Some(flow) => turn.start_flow(flow, None),
                None => {
                    turn.trace(format_args!("no flow listens to event:{event}"));
                    None
                }
            }
        } else {
            None
        };
        Ok((turn, pending))
    }
}

impl Handler<OpenTransfer> for ConversationActor {
    type Result = Result<TransferChanged, ConversationError>;

    fn handle(&mut self, msg: OpenTransfer, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.open_manual_transfer(msg))
    }
}

impl ConversationActor {
    fn open_manual_transfer(&mut self, msg: OpenTransfer) -> Result<TransferChanged, ConversationError> {
        self.begin()?;
        let mut turn = self.turn(msg.bot)?;
        if let Some(waiting) = turn.conversation.active_transfer {
            if self.store.transfer(waiting)?.is_some_and(|t| t.status == TransferStatus::Active) {
                return Err(ConversationError::Conflict(format!(
                    "this conversation is already with a human (transfer {waiting}); resume it first"
                )));
            }
        }
        let transfer = turn.open_transfer(msg.team_id, msg.notes, TransferSource::Manual);
        let ticket = self.commit(&mut turn, None)?;
        Ok(TransferChanged { transfer, ticket })
    }
}

impl Handler<ResumeTransfer> for ConversationActor {
    type Result = Result<TransferChanged, ConversationError>;

    fn handle(&mut self, msg: ResumeTransfer, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.resume_transfer(msg))
    }
}

impl ConversationActor {
    fn resume_transfer(&mut self, msg: ResumeTransfer) -> Result<TransferChanged, ConversationError> {
        self.begin()?;
        let conversation = self.existing()?.clone();
        let mut transfer = self
            .store
            .transfer(msg.transfer_id)?
            .filter(|t| t.conversation_id == self.id)
            .ok_or(ConversationError::Missing("transfer"))?;
        let bot = self.registry.bot_config(conversation.chatbot_id)?;
        let mut turn = self.turn(bot)?;
        let at = turn.at;
        if transfer.status == TransferStatus::Active {
            transfer.status = TransferStatus::Resumed;
            transfer.resumed_at = Some(at);
            transfer.updated_at = at;
        }
        turn.conversation.bot_active = true;
        if turn.conversation.active_transfer == Some(transfer.id) {
            turn.conversation.active_transfer = None;
        }
        if turn.conversation.status == ConversationStatus::Escalated {
            turn.conversation.status = ConversationStatus::Active;
        }
        turn.transfer = Some(transfer.clone());
        turn.transfer_event = Some("transfer.resumed");
        let ticket = self.commit(&mut turn, None)?;
        Ok(TransferChanged { transfer, ticket })
    }
}

impl Handler<SetSessionStatus> for ConversationActor {
    type Result = Result<SessionChanged, ConversationError>;

    fn handle(&mut self, msg: SetSessionStatus, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.set_session_status(msg))
    }
}

impl ConversationActor {
    fn set_session_status(&mut self, msg: SetSessionStatus) -> Result<SessionChanged, ConversationError> {
        self.begin()?;
        let conversation = self.existing()?.clone();
        if self.session.as_ref().map(|s| s.id) != Some(msg.session_id) {
            // An older session of this conversation: it is closed for good.
            let session = self.store.session(msg.session_id)?.ok_or(ConversationError::Missing("session"))?;
            return match msg.action {
                SessionAction::Close => Ok(SessionChanged { session, ticket: CommitTicket::NONE }),
                _ => Err(ConversationError::Conflict(
                    "this session was replaced by a newer one and cannot be reopened".into(),
                )),
            };
        }
        let bot = self.registry.bot_config(conversation.chatbot_id)?;
        let mut turn = self.turn(bot)?;
        let at = turn.at;
        let session = turn.session.as_mut().ok_or(ConversationError::Missing("session"))?;
        match msg.action {
            SessionAction::Pause if session.status != SessionStatus::Closed => session.status = SessionStatus::Paused,
            SessionAction::Pause => {
                return Err(ConversationError::Conflict("a closed session cannot be paused".into()))
            }
            SessionAction::Resume | SessionAction::Open => {
                session.status = SessionStatus::Open;
                session.closed_at = None;
            }
            SessionAction::Close => {
                if session.status != SessionStatus::Closed {
                    session.status = SessionStatus::Closed;
                    session.closed_at = Some(at);
                }
            }
        }
        session.last_activity = at;
        turn.session_changed = true;
        let ticket = self.commit(&mut turn, None)?;
        let session = self.session.as_deref().cloned().ok_or(ConversationError::Missing("session"))?;
        Ok(SessionChanged { session, ticket })
    }
}

impl Handler<ReconcileFlow> for ConversationActor {
    type Result = Result<CommitTicket, ConversationError>;

    fn handle(&mut self, _msg: ReconcileFlow, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, _ctx| actor.reconcile_flow())
    }
}

impl ConversationActor {
    fn reconcile_flow(&mut self) -> Result<CommitTicket, ConversationError> {
        self.begin()?;
        let conversation = self.existing()?.clone();
        let bot = self.registry.bot_config(conversation.chatbot_id)?;
        let mut turn = self.turn(bot)?;
        // A session whose flow or step is gone is closed by the lookup itself.
        turn.waiting_step();
        if !turn.session_changed {
            return Ok(CommitTicket::NONE);
        }
        self.commit(&mut turn, None)
    }
}

impl Handler<DeleteConversation> for ConversationActor {
    type Result = Result<CommitTicket, ConversationError>;

    fn handle(&mut self, _msg: DeleteConversation, ctx: &mut Self::Context) -> Self::Result {
        self.guarded(ctx, |actor, ctx| actor.delete_conversation(ctx))
    }
}

impl ConversationActor {
    fn delete_conversation(&mut self, ctx: &mut Context<Self>) -> Result<CommitTicket, ConversationError> {
        self.begin()?;
        let conversation = self.existing()?.clone();
        let ticket = self.store.delete_conversation(&conversation)?;
        self.conversation = None;
        self.session = None;
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
