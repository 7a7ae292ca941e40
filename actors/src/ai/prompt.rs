//! What an AI reply is asked with, built purely from its inputs: which AI contexts apply to a
//! message (trigger keywords, priority, a size budget), the system prompt they make, and the
//! conversation's recent history as chat turns.
//!
//! No I/O here: `api` contexts are fetched by the caller and passed in with their content filled.

use serde::Serialize;

use crate::engine::rules::KeywordMatcher;
use crate::model::{AiContext, MatchType, Message, Role};

/// One turn of a chat as the providers take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatTurn {
    /// `"user"` or `"assistant"`.
    pub role: &'static str,
    pub content: String,
}

impl ChatTurn {
    /// A turn of the person writing to the bot.
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user", content: content.into() }
    }

    /// A turn of the business side (the bot or a human agent).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: "assistant", content: content.into() }
    }
}

/// Whether `context` is enabled and one of its trigger keywords occurs in `normalized_text` as a
/// whole word or phrase (so `price` does not trigger on `priceless`).
///
/// `normalized_text` is the output of [`crate::engine::rules::normalize`].
pub fn triggers(context: &AiContext, normalized_text: &str) -> bool {
    context.enabled
        && KeywordMatcher::new(MatchType::Contains, &context.trigger_keywords)
            .is_ok_and(|matcher| matcher.matches(normalized_text))
}

/// The enabled contexts that `normalized_text` triggers, highest priority first (ties: oldest
/// first, then by id), whatever their size.
pub fn matching_contexts<'a>(contexts: &'a [AiContext], normalized_text: &str) -> Vec<&'a AiContext> {
    let mut matching: Vec<&AiContext> = contexts.iter().filter(|c| triggers(c, normalized_text)).collect();
    matching.sort_by(|a, b| {
        b.priority.cmp(&a.priority).then_with(|| a.created_at.cmp(&b.created_at)).then_with(|| a.id.cmp(&b.id))
    });
    matching
}

/// The contexts that go into the prompt for `normalized_text`: the triggered ones in
/// [`matching_contexts`] order, skipping any whose `content` is blank or longer (in characters)
/// than what is left of `budget_chars`, so a smaller, lower-priority context can still fit.
///
/// `api` contexts must be passed with their fetched content in `content`.
pub fn select_contexts<'a>(
    contexts: &'a [AiContext],
    normalized_text: &str,
    budget_chars: usize,
) -> Vec<&'a AiContext> {
    let mut remaining = budget_chars;
    matching_contexts(contexts, normalized_text)
        .into_iter()
        .filter(|context| {
            let content = context.content.trim();
            let chars = content.chars().count();
            if content.is_empty() || chars > remaining {
                return false;
            }
            remaining -= chars;
            true
        })
        .collect()
}

/// The system prompt: `base`, then `"\n\n## {name}\n{content}"` for each context in order.
pub fn system_prompt(base: &str, contexts: &[(&str, &str)]) -> String {
    let mut prompt = base.trim().to_string();
    for (name, content) in contexts {
        prompt.push_str("\n\n## ");
        prompt.push_str(name.trim());
        prompt.push('\n');
        prompt.push_str(content.trim());
    }
    // Without a base prompt the first section would start with blank lines.
    prompt.trim_start().to_string()
}

/// The most recent `messages` as chat turns, oldest first: user messages are `user`, bot and
/// agent messages `assistant`; system messages (events) and empty ones are skipped. At most
/// `max_messages` turns and `max_chars` characters in all are kept, dropping the oldest first.
pub fn history(messages: &[Message], max_messages: usize, max_chars: usize) -> Vec<ChatTurn> {
    let mut total_chars = 0usize;
    let mut turns: Vec<ChatTurn> = messages
        .iter()
        .rev()
        .filter_map(|message| {
            let content = message.content.trim();
            if content.is_empty() {
                return None;
            }
            match message.role {
                Role::User => Some(ChatTurn::user(content)),
                Role::Assistant | Role::Agent => Some(ChatTurn::assistant(content)),
                Role::System => None,
            }
        })
        .take(max_messages)
        .take_while(|turn| {
            total_chars += turn.content.chars().count();
            total_chars <= max_chars
        })
        .collect();
    turns.reverse();
    turns
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::engine::rules::normalize;
    use crate::model::{AiContextId, AiContextType, ChatbotId, ConversationId, MessageId};

    fn epoch() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn context(id: u128, priority: i32, age_secs: i64, keywords: &[&str], content: &str) -> AiContext {
        AiContext {
            id: AiContextId(Uuid::from_u128(id)),
            chatbot_id: ChatbotId(Uuid::from_u128(1)),
            name: format!("context {id}"),
            trigger_keywords: keywords.iter().map(|k| k.to_string()).collect(),
            context_type: AiContextType::Static,
            content: content.to_string(),
            api_config: None,
            priority,
            enabled: true,
            created_at: epoch() - Duration::seconds(age_secs),
            updated_at: epoch(),
        }
    }

    fn ids(selected: &[&AiContext]) -> Vec<u128> {
        selected.iter().map(|c| c.id.0.as_u128()).collect()
    }

    fn select(contexts: &[AiContext], text: &str, budget: usize) -> Vec<u128> {
        ids(&select_contexts(contexts, &normalize(text), budget))
    }

    fn message(seq: u64, role: Role, content: &str) -> Message {
        Message {
            id: MessageId(Uuid::from_u128(seq as u128)),
            ..Message::new(ConversationId(Uuid::from_u128(9)), seq, role, content, "text", epoch())
        }
    }

    #[test]
    fn a_context_is_selected_when_one_of_its_keywords_occurs_as_a_whole_word() {
        let contexts = [context(1, 0, 0, &["shipping", "delivery"], "Free shipping over $50.")];

        assert_eq!(select(&contexts, "How long does DELIVERY take?", 1000), vec![1]);
        assert_eq!(select(&contexts, "  what about shipping  ", 1000), vec![1]);
        assert!(select(&contexts, "deliveryman here", 1000).is_empty());
        assert!(select(&contexts, "hello", 1000).is_empty());
    }

    #[test]
    fn phrases_match_as_phrases() {
        let contexts = [context(1, 0, 0, &["return policy"], "30 days.")];

        assert_eq!(select(&contexts, "what is your return policy?", 1000), vec![1]);
        assert!(select(&contexts, "return the policy", 1000).is_empty());
    }

    #[test]
    fn disabled_contexts_and_contexts_without_keywords_are_never_selected() {
        let mut disabled = context(1, 0, 0, &["price"], "Prices.");
        disabled.enabled = false;
        let no_keywords = context(2, 0, 0, &[], "Always?");
        let blank_keyword = context(3, 0, 0, &["  "], "Blank.");

        assert!(select(&[disabled, no_keywords, blank_keyword], "price", 1000).is_empty());
    }

    #[test]
    fn selected_contexts_come_highest_priority_first_and_oldest_first_on_ties() {
        let contexts = [
            context(1, 1, 10, &["order"], "low"),
            context(2, 5, 0, &["order"], "high, newer"),
            context(3, 5, 30, &["order"], "high, older"),
            context(4, 3, 0, &["order"], "middle"),
        ];

        assert_eq!(select(&contexts, "my order", 1000), vec![3, 2, 4, 1]);
    }

    #[test]
    fn a_context_over_the_remaining_budget_is_skipped_and_a_smaller_one_still_fits() {
        let contexts = [
            context(1, 10, 0, &["price"], &"a".repeat(60)),
            context(2, 5, 0, &["price"], &"b".repeat(50)),
            context(3, 1, 0, &["price"], &"c".repeat(40)),
        ];

        // 60 fits, 50 would exceed the 40 left, 40 fits exactly.
        assert_eq!(select(&contexts, "price", 100), vec![1, 3]);
        assert_eq!(select(&contexts, "price", 59), vec![2]);
        assert!(select(&contexts, "price", 0).is_empty());
    }

    #[test]
    fn the_budget_counts_characters_not_bytes() {
        let contexts = [context(1, 0, 0, &["preis"], &"ü".repeat(10))];

        assert_eq!(select(&contexts, "preis", 10), vec![1]);
    }

    #[test]
    fn a_context_with_blank_content_is_skipped() {
        let contexts = [context(1, 0, 0, &["price"], "   ")];

        assert!(select(&contexts, "price", 100).is_empty());
    }

    #[test]
    fn the_system_prompt_is_the_base_then_one_section_per_context() {
        let prompt = system_prompt("You are helpful.", &[("Shipping", "Free over $50."), ("Returns", "30 days.")]);

        assert_eq!(prompt, "You are helpful.\n\n## Shipping\nFree over $50.\n\n## Returns\n30 days.");
    }

    #[test]
    fn the_system_prompt_without_contexts_is_the_base_alone() {
        assert_eq!(system_prompt("You are helpful.", &[]), "You are helpful.");
    }

    #[test]
    fn the_system_prompt_without_a_base_starts_with_the_first_section() {
        assert_eq!(system_prompt("", &[("Shipping", "Free.")]), "## Shipping\nFree.");
    }

    #[test]
    fn history_maps_roles_and_skips_system_and_empty_messages() {
        let messages = [
            message(1, Role::User, "hi"),
            message(2, Role::Assistant, "hello!"),
            message(3, Role::System, "user_seen_message"),
            message(4, Role::Agent, "Anna here"),
            message(5, Role::User, "  "),
            message(6, Role::User, "thanks"),
        ];

        assert_eq!(
            history(&messages, 20, 8000),
            vec![
                ChatTurn::user("hi"),
                ChatTurn::assistant("hello!"),
                ChatTurn::assistant("Anna here"),
                ChatTurn::user("thanks"),
            ]
        );
    }

    #[test]
    fn history_keeps_the_most_recent_messages() {
        let messages: Vec<Message> = (1..=10).map(|i| message(i, Role::User, &format!("m{i}"))).collect();

        let turns = history(&messages, 3, 8000);

        assert_eq!(turns, vec![ChatTurn::user("m8"), ChatTurn::user("m9"), ChatTurn::user("m10")]);
    }

    #[test]
    fn history_drops_the_oldest_messages_over_the_character_limit() {
        let messages = [
            message(1, Role::User, &"a".repeat(50)),
            message(2, Role::Assistant, &"b".repeat(30)),
            message(3, Role::User, &"c".repeat(30)),
        ];

        assert_eq!(history(&messages, 20, 60).len(), 2);
        assert_eq!(history(&messages, 20, 59), vec![ChatTurn::user("c".repeat(30))]);
        assert!(history(&messages, 20, 10).is_empty());
        assert!(history(&messages, 0, 8000).is_empty());
    }
}
