//! Turn records: the messages of one actor turn (a message and the replies to it) stored as
//! one value of the `messages` tree, under conversation ++ the first message's seq. A turn is
//! then one key, written with one insert, and the tree stays ordered by seq.
//!
//! The record is `TURN`, a format byte (and for an answer, `bot_active`), then a MessagePack
//! array of messages, each a
//! positional array ([`Stored`]): ids as two integers, the time as seconds and nanoseconds,
//! and no conversation id (the key has it). That is about a third of the named encoding
//! of the same messages, and every byte of a record is copied into sled's log, rewritten with
//! its page, and held in its cache.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use crate::model::{Button, ConversationId, Message, MessageId, Role, WhatsappFlowRef};

/// First byte of a turn record in `messages` and of the turn pointer in a `dedupe` record.
/// MessagePack never uses it, so a record from before turns (one message in the named
/// encoding, or a bare answer) is told apart by its first byte and still reads.
pub(super) const TURN: u8 = 0xc1;

/// The format byte after `TURN`.
const POSITIONAL: u8 = 1;

/// The format byte of a turn that is the whole answer to its first message's provider id:
/// `bot_active` as that answer gave it follows, then the messages as in [`POSITIONAL`]. Such
/// a turn needs no provider-id record while its conversation's actor remembers the id
/// (see [`super::recent`]).
const ANSWER: u8 = 2;

/// A message as a turn record stores it (a MessagePack array, in this field order).
#[derive(Debug, Deserialize)]
struct Stored {
    id: (u64, u64),
    seq: u64,
    role: u8,
    content: String,
    message_type: String,
    buttons: Vec<Button>,
    tokens_used: Option<u32>,
    provider_message_id: Option<String>,
    agent_id: Option<String>,
    whatsapp_flow: Option<WhatsappFlowRef>,
    created_at: (i64, u32),
}

/// [`Stored`] borrowing from a [`Message`], for writing.
#[derive(Serialize)]
struct StoredRef<'m> {
    id: (u64, u64),
    seq: u64,
    role: u8,
    content: &'m str,
    message_type: &'m str,
    buttons: &'m [Button],
    tokens_used: Option<u32>,
    provider_message_id: &'m Option<String>,
    agent_id: &'m Option<String>,
    whatsapp_flow: &'m Option<WhatsappFlowRef>,
    created_at: (i64, u32),
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::User => 0,
        Role::Assistant => 1,
        Role::Agent => 2,
        Role::System => 3,
    }
}

fn role_of(code: u8) -> Result<Role, StoreError> {
    Ok(match code {
        0 => Role::User,
        1 => Role::Assistant,
        2 => Role::Agent,
        3 => Role::System,
        other => return Err(corrupt(format!("unknown role {other}"))),
    })
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt { tree: "messages", message }
}

/// The record of a turn's `messages` (all of one conversation, in seq order).
pub(super) fn encode(messages: &[Message]) -> Result<Vec<u8>, StoreError> {
    encode_after(&[TURN, POSITIONAL], messages)
}

/// The record of a turn that answers its first message's provider id, leaving the bot active
/// or not ([`ANSWER`]).
pub(super) fn encode_answer(messages: &[Message], bot_active: bool) -> Result<Vec<u8>, StoreError> {
    encode_after(&[TURN, ANSWER, u8::from(bot_active)], messages)
}

/// `bot_active` as the answer a record of [`encode_answer`] holds gave it; `None` for any
/// other record.
pub(super) fn answer_bot_active(record: &[u8]) -> Option<bool> {
    match record {
        [TURN, ANSWER, flag, ..] => Some(*flag == 1),
        _ => None,
    }
}

fn encode_after(header: &[u8], messages: &[Message]) -> Result<Vec<u8>, StoreError> {
    let stored: Vec<StoredRef<'_>> = messages
        .iter()
        .map(|m| StoredRef {
            id: m.id.0.as_u64_pair(),
            seq: m.seq,
            role: role_code(m.role),
            content: &m.content,
            message_type: &m.message_type,
            buttons: &m.buttons,
            tokens_used: m.tokens_used,
            provider_message_id: &m.provider_message_id,
            agent_id: &m.agent_id,
            whatsapp_flow: &m.whatsapp_flow,
            created_at: (m.created_at.timestamp(), m.created_at.timestamp_subsec_nanos()),
        })
        .collect();
    let mut record = Vec::with_capacity(16 + messages.iter().map(|m| 64 + m.content.len()).sum::<usize>());
    record.extend_from_slice(header);
    rmp_serde::encode::write(&mut record, &stored).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(record)
}

/// The messages of a record of `conversation`'s `messages`, in order.
pub(super) fn decode(conversation: ConversationId, record: &[u8]) -> Result<Vec<Message>, StoreError> {
    let positional = match record {
        [TURN, POSITIONAL, rest @ ..] | [TURN, ANSWER, _, rest @ ..] => rest,
        [TURN, ..] => return Err(corrupt("unknown turn record format".into())),
        // A record from before turns: one message, named encoding.
        _ => return Ok(vec![super::decode("messages", record)?]),
    };
    let stored: Vec<Stored> = rmp_serde::from_slice(positional).map_err(|e| corrupt(e.to_string()))?;
    stored
        .into_iter()
        .map(|s| {
            let created_at = chrono::DateTime::from_timestamp(s.created_at.0, s.created_at.1)
                .ok_or_else(|| corrupt(format!("time {:?} out of range", s.created_at)))?;
            Ok(Message {
                id: MessageId(Uuid::from_u64_pair(s.id.0, s.id.1)),
                conversation_id: conversation,
                seq: s.seq,
                role: role_of(s.role)?,
                content: s.content,
                message_type: s.message_type,
                buttons: s.buttons,
                tokens_used: s.tokens_used,
                provider_message_id: s.provider_message_id,
                agent_id: s.agent_id,
                whatsapp_flow: s.whatsapp_flow,
                created_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;

    fn message(conversation: ConversationId, seq: u64, role: Role) -> Message {
        Message::new(conversation, seq, role, format!("message {seq} ✓"), "text", now())
    }

    #[test]
    fn a_turn_reads_back_as_written_with_every_field() {
        let conversation = ConversationId::new_random();
        let mut asked = message(conversation, 7, Role::User);
        asked.provider_message_id = Some("wamid.HBgL".into());
        let mut answered = message(conversation, 8, Role::Assistant);
        answered.buttons = vec![Button { id: "yes".into(), title: "Yes".into() }];
        answered.tokens_used = Some(42);
        answered.whatsapp_flow = Some(WhatsappFlowRef {
            flow_id: "f1".into(),
            parameters: serde_json::json!({ "screen": "A", "n": [1, 2] }),
        });
        let mut agent = message(conversation, 9, Role::Agent);
        agent.agent_id = Some("agent-1".into());
        let turn = vec![asked, answered, agent, message(conversation, 10, Role::System)];

        let record = encode(&turn).expect("encodes");

        assert_eq!(decode(conversation, &record).expect("decodes"), turn);
    }

    #[test]
    fn an_answer_turn_reads_like_any_turn_and_keeps_bot_active() {
        let conversation = ConversationId::new_random();
        let turn = vec![message(conversation, 1, Role::User), message(conversation, 2, Role::Assistant)];
        for bot_active in [true, false] {
            let record = encode_answer(&turn, bot_active).expect("encodes");
            assert_eq!(decode(conversation, &record).expect("decodes"), turn);
            assert_eq!(answer_bot_active(&record), Some(bot_active));
        }
        assert_eq!(answer_bot_active(&encode(&turn).expect("encodes")), None, "a plain turn is no answer");
    }

    #[test]
    fn a_turn_record_is_a_fraction_of_the_named_encoding() {
        let conversation = ConversationId::new_random();
        let turn = vec![message(conversation, 1, Role::User), message(conversation, 2, Role::Assistant)];
        let named = rmp_serde::to_vec_named(&turn).expect("encodes");
        let record = encode(&turn).expect("encodes");
        assert!(record.len() * 2 < named.len(), "{} bytes against {} named", record.len(), named.len());
    }

    #[test]
    fn a_message_stored_before_turns_still_reads() {
        let conversation = ConversationId::new_random();
        let old = message(conversation, 3, Role::User);
        let record = rmp_serde::to_vec_named(&old).expect("encodes");
        assert_eq!(decode(conversation, &record).expect("decodes"), vec![old]);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let conversation = ConversationId::new_random();
        let record = encode(&[message(conversation, 1, Role::User)]).expect("encodes");
        for cut in 0..record.len() {
            let _ = decode(conversation, &record[..cut]);
        }
        assert!(decode(conversation, &[TURN, 9, 1, 2]).is_err());
    }
}
