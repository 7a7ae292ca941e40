//! The records baton stores and serves: tenants, keys, chatbots and their configuration,
//! channels, contacts, conversations and messages.
//!
//! One struct serves both the store (as MessagePack) and the HTTP API (as JSON), so a field
//! added here is persisted and served without a second copy to keep in step.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Declares a newtype id over a UUID that serializes as its hyphenated string.
macro_rules! uuid_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh id: UUIDv7, so ids made later sort after earlier ones (within this
            /// process even in the same millisecond), which breaks creation-time ties.
            pub fn new_random() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 bytes used in store keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Reads an id back from the first 16 bytes of a store key.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes.get(..16)?).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

uuid_id!(
    /// A tenant: the owner of keys, teams and chatbots.
    TenantId,
    /// An API key's public id (never the key itself).
    KeyId,
    /// A chatbot.
    ChatbotId,
    /// A keyword rule of a chatbot.
    RuleId,
    /// A contact: the person behind a provider id on a chatbot.
    ContactId,
    /// A conversation: one chatbot, one channel, one provider id.
    ConversationId,
    /// A stored message.
    MessageId,
    /// A multi-step flow of a chatbot.
    FlowId,
    /// A flow session of a conversation.
    SessionId,
    /// A team of agents.
    TeamId,
    /// A human agent.
    AgentId,
    /// A hand-over of a conversation to humans.
    TransferId,
    /// An outbound webhook call in the outbox.
    DeliveryId,
    /// Knowledge given to the AI model when its keywords match.
    AiContextId,
);

/// Namespace for ids derived from provider-side identities, so that the same
/// (chatbot, channel, provider id) always names the same conversation.
const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6261_746f_6e2d_4964_2d6e_616d_6573_7061);

impl ConversationId {
    /// The conversation of `provider_id` on `channel_id` of `chatbot`.
    ///
    /// Derived rather than random so that concurrent first messages of one thread agree on
    /// its id (and so on its actor) without a lookup.
    pub fn derive(chatbot: ChatbotId, channel_id: &str, provider_id: &str) -> Self {
        Self(derive_uuid(chatbot, "conversation", &[channel_id, provider_id]))
    }
}

impl ContactId {
    /// The contact of `provider_id` on `chatbot`, shared by all its channels.
    pub fn derive(chatbot: ChatbotId, provider_id: &str) -> Self {
        Self(derive_uuid(chatbot, "contact", &[provider_id]))
    }
}

fn derive_uuid(chatbot: ChatbotId, kind: &str, parts: &[&str]) -> Uuid {
    let mut name = Vec::with_capacity(64);
    name.extend_from_slice(chatbot.as_bytes());
    name.extend_from_slice(kind.as_bytes());
    for part in parts {
        // Length-prefixed so that ("ab", "c") and ("a", "bc") stay distinct.
        name.extend_from_slice(&(part.len() as u32).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&DERIVED_ID_NAMESPACE, &name)
}

/// The current time at millisecond precision, as every timestamp baton stores.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A stored API key. Only the SHA-256 hash of the key is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub scopes: Vec<String>,
    /// The key's first characters, shown so that people can tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
}

/// An API key as persisted: its public view and the SHA-256 hash of the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub key: ApiKey,
    pub hash: Vec<u8>,
}

/// A chatbot and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chatbot {
    pub id: ChatbotId,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub settings: Settings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A quick-reply button or list row. `id` is generated from the title when not given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Button {
    #[serde(default)]
    pub id: String,
    pub title: String,
}

/// A chatbot's behaviour settings (seed `001` plus baton's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Settings {
    pub chatbot_enabled: bool,
    pub ai_enabled: bool,
    pub ai_provider: String,
    pub ai_model: String,
    pub ai_temperature: f64,
    pub ai_max_tokens: u32,
    pub system_prompt: String,
    pub greeting_message: String,
    pub greeting_buttons: Vec<Button>,
    pub fallback_message: String,
    pub fallback_buttons: Vec<Button>,
    pub transfer_keywords: Vec<String>,
    pub transfer_message: String,
    pub business_hours_enabled: bool,
    pub business_hours: BusinessHours,
    /// Idle minutes after which an open session closes (fractions allowed).
    pub session_timeout_minutes: f64,
    pub auto_pause_on_agent_message: bool,
    pub ai_debounce_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            chatbot_enabled: true,
            ai_enabled: false,
            ai_provider: "openai".into(),
            ai_model: "gpt-4o-mini".into(),
            ai_temperature: 0.7,
            ai_max_tokens: 500,
            system_prompt: "You are a helpful customer service assistant.".into(),
            greeting_message: "Hello! Welcome. How can I help you?".into(),
            greeting_buttons: Vec::new(),
            fallback_message: "Sorry, I didn't understand that. Please try again.".into(),
            fallback_buttons: Vec::new(),
            transfer_keywords: Vec::new(),
            transfer_message: "Connecting you with a member of our team. Please wait a moment.".into(),
            business_hours_enabled: false,
            business_hours: BusinessHours::default(),
            session_timeout_minutes: 30.0,
            auto_pause_on_agent_message: true,
            ai_debounce_ms: 0,
        }
    }
}

/// A weekly opening schedule in a time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct BusinessHours {
    pub timezone: String,
    /// Day (`mon` … `sun`) to a list of `["HH:MM", "HH:MM"]` opening intervals.
    pub weekly: BTreeMap<String, Vec<[String; 2]>>,
    pub closed_message: String,
}

impl Default for BusinessHours {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            weekly: BTreeMap::new(),
            closed_message: "We're closed right now. We'll get back to you during business hours.".into(),
        }
    }
}

/// How a keyword rule compares its keywords with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchType {
    /// The whole message equals the keyword.
    Exact,
    /// The keyword appears as a whole word or phrase.
    Contains,
    /// The message starts with the keyword.
    StartsWith,
    /// The keyword is a regex searched anywhere in the message.
    Regex,
}

/// What kind of answer a keyword rule gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseType {
    #[default]
    Text,
    Buttons,
}

/// A keyword rule: when a message matches, the bot answers `response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeywordRule {
    pub id: RuleId,
    pub chatbot_id: ChatbotId,
    pub name: String,
    pub keywords: Vec<String>,
    pub match_type: MatchType,
    pub response_type: ResponseType,
    pub response: String,
    #[serde(default)]
    pub buttons: Vec<Button>,
    pub priority: i32,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An HTTP method a webhook may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    #[default]
    Post,
    Put,
    Patch,
}

/// Where a channel's bot replies and agent messages are delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplyWebhook {
    pub url: String,
    #[serde(default)]
    pub method: WebhookMethod,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Signing secret (Standard Webhooks). Never served back in full.
    #[serde(default)]
    pub secret: Option<String>,
}

/// The call made when a human takes a conversation over (seed `000`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TakeoverWebhook {
    pub url: String,
    #[serde(default)]
    pub method: WebhookMethod,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Merged over the default payload; its keys win.
    #[serde(default)]
    pub body: serde_json::Map<String, serde_json::Value>,
}

/// A provider channel of a chatbot, identified by the provider's `channelId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Channel {
    pub id: String,
    pub chatbot_id: ChatbotId,
    pub tenant_id: TenantId,
    pub provider: String,
    pub name: String,
    pub reply_webhook: Option<ReplyWebhook>,
    pub human_takeover_webhook: Option<TakeoverWebhook>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The person behind a provider id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: ContactId,
    pub tenant_id: TenantId,
    pub chatbot_id: ChatbotId,
    pub provider_id: String,
    pub first_name: String,
    pub last_name: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Contact {
    /// "First Last", trimmed; empty when neither is known.
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name).trim().to_string()
    }
}

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    #[default]
    Active,
    Completed,
    Escalated,
    Failed,
}

impl FromStr for ConversationStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(Self::Active),
            "completed" => Ok(Self::Completed),
            "escalated" => Ok(Self::Escalated),
            "failed" => Ok(Self::Failed),
            _ => Err(()),
        }
    }
}

impl ConversationStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Escalated => "escalated",
            Self::Failed => "failed",
        }
    }
}

/// A conversation: the state its actor owns, as last persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub tenant_id: TenantId,
    pub chatbot_id: ChatbotId,
    pub channel_id: String,
    pub channel_name: String,
    pub contact_id: ContactId,
    pub provider_id: String,
    pub status: ConversationStatus,
    pub bot_active: bool,
    /// The `seq` the next stored message gets; messages are numbered from 1 without gaps.
    pub next_seq: u64,
    /// Variables set through the API or by flows; templated into messages.
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub last_message_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The conversation's latest flow session, if it ever had one.
    #[serde(default)]
    pub session_id: Option<SessionId>,
    /// The transfer waiting for (or handled by) a human, until it is resumed.
    #[serde(default)]
    pub active_transfer: Option<TransferId>,
    /// Ownership epoch: bumped whenever a human takes the conversation over or hands it
    /// back. A bot reply created in an older epoch is never delivered.
    #[serde(default)]
    pub epoch: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    Agent,
    System,
}

/// A stored message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub seq: u64,
    pub role: Role,
    pub content: String,
    pub message_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    pub tokens_used: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// For `whatsapp_flow` replies: the native flow the channel renders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_flow: Option<WhatsappFlowRef>,
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// A new message (a fresh id) with no buttons, tokens or ids of the provider or an agent.
    pub fn new(
        conversation_id: ConversationId,
        seq: u64,
        role: Role,
        content: impl Into<String>,
        message_type: impl Into<String>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Message {
            id: MessageId::new_random(),
            conversation_id,
            seq,
            role,
            content: content.into(),
            message_type: message_type.into(),
            buttons: Vec::new(),
            tokens_used: None,
            provider_message_id: None,
            agent_id: None,
            whatsapp_flow: None,
            created_at,
        }
    }

    /// A stored reply message as the reply the channel receives.
    pub fn as_reply(&self) -> Reply {
        Reply {
            id: self.id,
            kind: match self.whatsapp_flow {
                Some(_) => ReplyKind::WhatsappFlow,
                None => ReplyKind::for_button_count(self.buttons.len()),
            },
            text: self.content.clone(),
            buttons: self.buttons.clone(),
            whatsapp_flow: self.whatsapp_flow.clone(),
        }
    }

    /// The bot's replies among `messages` (a turn's), as the channel receives them.
    pub fn replies_among(messages: &[Message]) -> Vec<Reply> {
        messages.iter().filter(|m| m.role == Role::Assistant).map(Message::as_reply).collect()
    }
}

/// A reply the bot sends, as returned by `handle` and delivered to the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reply {
    pub id: MessageId,
    #[serde(rename = "type")]
    pub kind: ReplyKind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    /// For `whatsapp_flow` replies: the native flow to render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_flow: Option<WhatsappFlowRef>,
}

/// A native WhatsApp Flow a reply asks the channel to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhatsappFlowRef {
    pub flow_id: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// How a reply renders: plain text, 1–3 quick-reply buttons, a 4–10 row list, or a native flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Text,
    Buttons,
    List,
    WhatsappFlow,
}

impl ReplyKind {
    /// The kind for a message with `buttons` buttons.
    pub fn for_button_count(buttons: usize) -> Self {
        match buttons {
            0 => Self::Text,
            1..=3 => Self::Buttons,
            _ => Self::List,
        }
    }

    /// The wire name, also stored as the message's `message_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Buttons => "buttons",
            Self::List => "list",
            Self::WhatsappFlow => "whatsapp_flow",
        }
    }
}

/// What a flow step sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Text,
    Buttons,
    ApiFetch,
    WhatsappFlow,
    Transfer,
}

/// What a flow step waits for after sending its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Nothing: the flow goes on to the next step at once.
    #[default]
    None,
    /// Any text.
    Text,
    /// One of the step's buttons, by id or title.
    Select,
    /// A number.
    Number,
    /// An e-mail address.
    Email,
}

/// Where a `transfer` step hands the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferConfig {
    /// Target team; `None` is the general queue.
    #[serde(default)]
    pub team_id: Option<TeamId>,
    /// Notes for the agents; `{{variables}}` are rendered.
    #[serde(default)]
    pub notes: String,
}

/// The HTTP call of an `api_fetch` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiFetchConfig {
    /// `{{variables}}` are rendered.
    pub url: String,
    #[serde(default = "default_fetch_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as JSON after rendering `{{variables}}` in its strings.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Variable name → JSON pointer into the answer (`/order/status`).
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    #[serde(default = "default_fetch_timeout_ms")]
    pub timeout_ms: u64,
    /// Sent when the call fails; the chatbot's fallback message when empty.
    #[serde(default)]
    pub on_error: String,
}

fn default_fetch_method() -> String {
    "GET".into()
}

fn default_fetch_timeout_ms() -> u64 {
    5000
}

/// The native flow of a `whatsapp_flow` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhatsappFlowConfig {
    pub flow_id: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowStep {
    /// Generated at save when not given.
    #[serde(default)]
    pub id: String,
    pub step_name: String,
    #[serde(default)]
    pub step_order: i32,
    #[serde(default)]
    pub message: String,
    pub message_type: StepType,
    #[serde(default)]
    pub input_type: InputType,
    #[serde(default)]
    pub buttons: Vec<Button>,
    #[serde(default)]
    pub store_as: Option<String>,
    #[serde(default)]
    pub transfer_config: Option<TransferConfig>,
    #[serde(default)]
    pub api_config: Option<ApiFetchConfig>,
    #[serde(default)]
    pub whatsapp_flow: Option<WhatsappFlowConfig>,
}

/// A field of a panel section (seed `001`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PanelField {
    pub key: String,
    pub label: String,
    #[serde(default)]
    pub order: i32,
    #[serde(default = "default_display_type")]
    pub display_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

fn default_display_type() -> String {
    "text".into()
}

/// A section of the contact info panel (seed `001`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PanelSection {
    pub id: String,
    pub label: String,
    #[serde(default = "default_columns")]
    pub columns: u8,
    #[serde(default)]
    pub collapsible: bool,
    #[serde(default)]
    pub default_collapsed: bool,
    #[serde(default)]
    pub order: i32,
    #[serde(default)]
    pub fields: Vec<PanelField>,
}

fn default_columns() -> u8 {
    1
}

/// Which session variables the agents' panel shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PanelConfig {
    #[serde(default)]
    pub sections: Vec<PanelSection>,
}

/// A multi-step conversation flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flow {
    pub id: FlowId,
    pub chatbot_id: ChatbotId,
    pub name: String,
    /// Words that start the flow, and `event:NAME` entries started by custom events.
    #[serde(default)]
    pub trigger_keywords: Vec<String>,
    #[serde(default)]
    pub initial_message: String,
    #[serde(default)]
    pub completion_message: String,
    pub enabled: bool,
    #[serde(default)]
    pub panel_config: Option<PanelConfig>,
    /// In `step_order`.
    pub steps: Vec<FlowStep>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whether a session runs, waits on a human, or is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    #[default]
    Open,
    Paused,
    Closed,
}

/// A conversation's flow session: where it is in which flow, and what it collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub contact_id: ContactId,
    pub chatbot_id: ChatbotId,
    pub current_flow_id: Option<FlowId>,
    /// The step's `step_name`.
    pub current_step: Option<String>,
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
    pub status: SessionStatus,
    pub started_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    #[serde(default)]
    pub closed_at: Option<DateTime<Utc>>,
}

/// A team of agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Team {
    pub id: TeamId,
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A human agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub email: String,
    pub team_ids: Vec<TeamId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whether a transfer waits for or has a human, or was handed back to the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    #[default]
    Active,
    Resumed,
}

/// What opened a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferSource {
    Flow,
    Keyword,
    Manual,
}

/// A hand-over of a conversation to a team (or the general queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transfer {
    pub id: TransferId,
    pub tenant_id: TenantId,
    pub chatbot_id: ChatbotId,
    pub conversation_id: ConversationId,
    pub contact_id: ContactId,
    pub contact_name: String,
    pub phone_number: String,
    pub status: TransferStatus,
    pub source: TransferSource,
    pub agent_id: Option<AgentId>,
    pub team_id: Option<TeamId>,
    pub notes: String,
    pub transferred_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub resumed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What an outbound call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// A bot reply to the channel's reply webhook (dropped if ownership changed before sending).
    BotReply,
    /// An agent's message to the channel's reply webhook.
    AgentMessage,
    /// The channel's human-takeover webhook (seed `000`).
    HumanTakeover,
}

/// Where an outbound call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    /// A bot reply dropped because a human took the conversation over before it was sent.
    Cancelled,
}

impl DeliveryStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// An outbound webhook call, written to the outbox in the same atomic batch as the change
/// that caused it and delivered by the webhook actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub chatbot_id: ChatbotId,
    pub conversation_id: ConversationId,
    pub channel_id: String,
    pub kind: DeliveryKind,
    pub url: String,
    pub method: WebhookMethod,
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
    /// Signing secret (Standard Webhooks); never served.
    #[serde(default)]
    pub secret: Option<String>,
    /// The conversation's ownership epoch when the delivery was made.
    pub epoch: u64,
    /// Orders a conversation's reply deliveries (the message `seq`, or 0).
    pub seq: u64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(default)]
    pub last_status: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Where an AI context's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AiContextType {
    /// `content` as written.
    Static,
    /// Fetched from `api_config.url` (cached for `cache_ttl_secs`).
    Api,
}

/// How an `api` AI context is fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AiContextApi {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long a fetched content is reused.
    #[serde(default = "default_context_ttl")]
    pub cache_ttl_secs: u64,
    /// Largest content used, in bytes (longer is cut).
    #[serde(default = "default_context_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_fetch_timeout_ms")]
    pub timeout_ms: u64,
    /// A JSON pointer into the answer whose string is the content; the whole body when empty.
    #[serde(default)]
    pub content_pointer: String,
}

fn default_context_ttl() -> u64 {
    300
}

fn default_context_bytes() -> usize {
    16 * 1024
}

/// Knowledge for the AI model (seed `001`): added to the system prompt when its
/// `trigger_keywords` match the message, highest `priority` first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AiContext {
    pub id: AiContextId,
    pub chatbot_id: ChatbotId,
    pub name: String,
    pub trigger_keywords: Vec<String>,
    pub context_type: AiContextType,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub api_config: Option<AiContextApi>,
    pub priority: i32,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
