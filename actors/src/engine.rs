//! The bot's decisions as pure code: state and an incoming text in, replies and effects out.
//! No I/O, no clock reads, no randomness; the conversation actor applies what it returns.

pub mod buttons;
pub mod flow;
pub mod hours;
pub mod rules;
pub mod template;

use chrono::{DateTime, Utc};

use crate::model::{Button, Flow, Settings, WhatsappFlowRef};
use rules::{CompiledRule, KeywordMatcher};

/// A chatbot's configuration, ready for the engine: settings, rules compiled and sorted, flows.
#[derive(Debug, Clone)]
pub struct BotRules {
    pub settings: Settings,
    /// Enabled and disabled rules in answering order.
    pub rules: Vec<CompiledRule>,
    /// The settings' `transfer_keywords` as a whole-word matcher, if any are set.
    pub transfer: Option<KeywordMatcher>,
    /// The chatbot's flows, oldest first (the first whose trigger matches starts).
    pub flows: Vec<Flow>,
}

impl BotRules {
    /// Prepares `settings`, `rules` and `flows` for matching. Rules that fail to compile (which
    /// validation at save time prevents) are left out rather than failing every message.
    pub fn new(settings: Settings, rules: Vec<crate::model::KeywordRule>, flows: Vec<Flow>) -> Self {
        let mut compiled: Vec<CompiledRule> = rules.into_iter().filter_map(|r| CompiledRule::compile(r).ok()).collect();
        rules::sort_for_matching(&mut compiled);
        let transfer = if settings.transfer_keywords.iter().any(|k| !k.trim().is_empty()) {
            let keywords: Vec<String> =
                settings.transfer_keywords.iter().filter(|k| !k.trim().is_empty()).cloned().collect();
            KeywordMatcher::new(crate::model::MatchType::Contains, &keywords).ok()
        } else {
            None
        };
        Self { settings, rules: compiled, transfer, flows }
    }

    /// A flow by id.
    pub fn flow(&self, id: crate::model::FlowId) -> Option<&Flow> {
        self.flows.iter().find(|f| f.id == id)
    }
}

/// Which part of the bot takes an incoming text, in the order API.md gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Route<'a> {
    /// 1. The flow step waiting for input takes it.
    FlowInput { flow: &'a Flow, step: usize },
    /// 2. A transfer keyword: hand over to the general queue.
    Transfer,
    /// Outside business hours: the closed message instead of steps 3–6.
    Closed,
    /// 3. A flow whose trigger matches starts.
    StartFlow(&'a Flow),
    /// 5. The AI model answers (nothing above did and the chatbot has `ai_enabled`).
    Ai,
    /// 4 and 6. A rule, or the greeting or fallback.
    Reply(Decision),
}

/// Decides who answers `text`. `waiting` is the flow step the conversation's session waits
/// at, if any. Callers have already checked that the bot is enabled, active and not paused.
pub fn route<'a>(
    bot: &'a BotRules,
    waiting: Option<(&'a Flow, usize)>,
    text: &str,
    first_message: bool,
    now: DateTime<Utc>,
) -> Route<'a> {
    if let Some((flow, step)) = waiting {
        return Route::FlowInput { flow, step };
    }
    let normalized = rules::normalize(text);
    if bot.transfer.as_ref().is_some_and(|t| t.matches(&normalized)) {
        return Route::Transfer;
    }
    if bot.settings.business_hours_enabled && !hours::is_open(&bot.settings.business_hours, now) {
        return Route::Closed;
    }
    if let Some(flow) = flow::triggered_by(&bot.flows, &normalized) {
        return Route::StartFlow(flow);
    }
    if let Some(decision) = rule_reply(bot, &normalized) {
        return Route::Reply(decision);
    }
    if bot.settings.ai_enabled {
        return Route::Ai;
    }
    Route::Reply(default_reply(bot, first_message))
}

/// A reply for the actor to store and send.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyDraft {
    pub text: String,
    pub buttons: Vec<Button>,
    /// Set for the reply of a `whatsapp_flow` step.
    pub whatsapp_flow: Option<WhatsappFlowRef>,
}

impl ReplyDraft {
    /// A text or buttons reply.
    pub fn new(text: &str, buttons: &[Button]) -> Self {
        Self { text: text.to_string(), buttons: buttons.to_vec(), whatsapp_flow: None }
    }
}

/// Why the bot answered the way it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Transfer,
    Rule(crate::model::RuleId),
    Greeting,
    Fallback,
}

/// What the bot does with one incoming text.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub replies: Vec<ReplyDraft>,
    pub reason: Reason,
    /// The bot hands the conversation to a human (transfer keyword).
    pub pause_bot: bool,
}

/// The bot's answer to `text`. `first_message` is true for a conversation's first message.
/// Callers have already checked that the bot is enabled and active.
pub fn respond(bot: &BotRules, text: &str, first_message: bool) -> Decision {
    let normalized = rules::normalize(text);
    if bot.transfer.as_ref().is_some_and(|t| t.matches(&normalized)) {
        return Decision {
            replies: vec![ReplyDraft::new(&bot.settings.transfer_message, &[])],
            reason: Reason::Transfer,
            pause_bot: true,
        };
    }
    rule_reply(bot, &normalized).unwrap_or_else(|| default_reply(bot, first_message))
}

/// The first matching rule's answer, if one matches (`normalized` from [`rules::normalize`]).
pub fn rule_reply(bot: &BotRules, normalized: &str) -> Option<Decision> {
    let rule = rules::first_match(&bot.rules, normalized)?;
    let buttons = match rule.rule.response_type {
        crate::model::ResponseType::Buttons => rule.rule.buttons.as_slice(),
        crate::model::ResponseType::Text => &[],
    };
    Some(Decision {
        replies: vec![ReplyDraft::new(&rule.rule.response, buttons)],
        reason: Reason::Rule(rule.rule.id),
        pause_bot: false,
    })
}

/// The greeting on a conversation's first message, the fallback on any later one.
pub fn default_reply(bot: &BotRules, first_message: bool) -> Decision {
    let s = &bot.settings;
    let (message, buttons, reason) = if first_message {
        (&s.greeting_message, &s.greeting_buttons, Reason::Greeting)
    } else {
        (&s.fallback_message, &s.fallback_buttons, Reason::Fallback)
    };
    let replies = if message.trim().is_empty() && buttons.is_empty() {
        Vec::new()
    } else {
        vec![ReplyDraft::new(message, buttons)]
    };
    Decision { replies, reason, pause_bot: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChatbotId, KeywordRule, MatchType, ResponseType, RuleId};

    fn rule(keyword: &str, match_type: MatchType, priority: i32, response: &str) -> KeywordRule {
        let now = crate::model::now();
        KeywordRule {
            id: RuleId::new_random(),
            chatbot_id: ChatbotId::new_random(),
            name: response.into(),
            keywords: vec![keyword.into()],
            match_type,
            response_type: ResponseType::Text,
            response: response.into(),
            buttons: vec![],
            priority,
            enabled: true,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn the_first_message_gets_the_greeting_and_later_ones_the_fallback() {
        let bot = BotRules::new(Settings::default(), vec![], vec![]);
        assert_eq!(respond(&bot, "anything", true).reason, Reason::Greeting);
        assert_eq!(respond(&bot, "anything", false).reason, Reason::Fallback);
    }

    #[test]
    fn a_matching_rule_answers_before_the_greeting() {
        let bot = BotRules::new(Settings::default(), vec![rule("hours", MatchType::Contains, 1, "9 to 5")], vec![]);
        let decision = respond(&bot, "  What are your HOURS?", true);
        assert_eq!(decision.replies[0].text, "9 to 5");
    }

    #[test]
    fn the_higher_priority_rule_wins() {
        let low = rule("order", MatchType::Contains, 1, "low");
        let high = rule("order", MatchType::Contains, 9, "high");
        let bot = BotRules::new(Settings::default(), vec![low, high], vec![]);
        assert_eq!(respond(&bot, "my order", false).replies[0].text, "high");
    }

    #[test]
    fn a_transfer_keyword_pauses_the_bot_with_the_transfer_message() {
        let settings = Settings { transfer_keywords: vec!["agent".into()], ..Settings::default() };
        let bot = BotRules::new(settings.clone(), vec![rule("agent", MatchType::Contains, 99, "rule")], vec![]);
        let decision = respond(&bot, "I want an agent", false);
        assert!(decision.pause_bot);
        assert_eq!(decision.replies[0].text, settings.transfer_message);
        assert!(!respond(&bot, "agents", false).pause_bot, "whole words only");
    }

    #[test]
    fn with_ai_enabled_the_model_answers_what_no_rule_does() {
        let settings = Settings { ai_enabled: true, ..Settings::default() };
        let bot = BotRules::new(settings, vec![rule("hours", MatchType::Contains, 1, "9 to 5")], vec![]);
        let now = chrono::Utc::now();
        assert_eq!(route(&bot, None, "what is the meaning of life", true, now), Route::Ai);
        assert!(matches!(route(&bot, None, "your hours?", false, now), Route::Reply(_)));
    }

    #[test]
    fn empty_greeting_sends_nothing() {
        let settings = Settings { greeting_message: " ".into(), ..Settings::default() };
        assert!(respond(&BotRules::new(settings, vec![], vec![]), "hi", true).replies.is_empty());
    }
}
