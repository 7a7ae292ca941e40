//! Keyword rules: validating and compiling a rule's keywords once (when a rule is saved or the
//! rule cache is loaded), then matching normalized messages against them in answering order.
//!
//! Every comparison sees a message through [`normalize`] (lowercased, trimmed); keywords are
//! normalized the same way when compiled, except regexes, which are only trimmed and compiled
//! case-insensitively so that escapes such as `\D` or `\S` keep their meaning.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::model::{KeywordRule, MatchType};

/// Upper bound on the compiled size of a regex keyword (and of a rule's combined regex set),
/// so that a saved rule cannot make matching expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a rule (or a keyword list) cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("keywords must not be empty")]
    NoKeywords,
    #[error("keywords[{index}] must not be empty")]
    EmptyKeyword { index: usize },
    #[error("keywords[{index}] is not a valid regex: {message}")]
    InvalidRegex { index: usize, message: String },
}

/// Lowercases and trims a message the way every comparison sees it.
pub fn normalize(text: &str) -> String {
    text.trim().to_lowercase()
}

/// A matcher for one keyword list of one match type, built once (regexes compiled at save time /
/// cache load).
#[derive(Debug, Clone)]
pub struct KeywordMatcher {
    inner: Matcher,
}

/// The compiled form of each match type.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(Vec<String>),
    StartsWith(Vec<String>),
    Contains(Vec<Phrase>),
    /// Several regex keywords searched in one pass.
    RegexSet(RegexSet),
    /// A single regex keyword, or several whose combined set would exceed the size limit.
    Regexes(Vec<Regex>),
}

/// A `contains` keyword and which of its ends must fall on a word boundary.
#[derive(Debug, Clone)]
struct Phrase {
    text: String,
    /// The keyword starts with a letter or digit, so the message must not continue a word before it.
    bounded_start: bool,
    /// The keyword ends with a letter or digit, so the message must not continue a word after it.
    bounded_end: bool,
}

impl Phrase {
    fn new(text: String) -> Self {
        let bounded_start = text.chars().next().is_some_and(char::is_alphanumeric);
        let bounded_end = text.chars().next_back().is_some_and(char::is_alphanumeric);
        Self { text, bounded_start, bounded_end }
    }

    /// Whether the phrase occurs in `message` without cutting a word in two.
    fn occurs_in(&self, message: &str) -> bool {
        let Some(first) = self.text.chars().next() else {
            return false;
        };
        let mut from = 0;
        // Occurrences may overlap ("x x" in "yx x x" is bounded only at its second
        // occurrence), so the search resumes one character after each rejected start.
        while let Some(offset) = message[from..].find(&self.text) {
            let start = from + offset;
            let end = start + self.text.len();
            let starts_word = !self.bounded_start || !ends_with_alphanumeric(&message[..start]);
            let ends_word = !self.bounded_end || !starts_with_alphanumeric(&message[end..]);
            if starts_word && ends_word {
                return true;
            }
            from = start + first.len_utf8();
        }
        false
    }
}

fn starts_with_alphanumeric(text: &str) -> bool {
    text.chars().next().is_some_and(char::is_alphanumeric)
}

fn ends_with_alphanumeric(text: &str) -> bool {
    text.chars().next_back().is_some_and(char::is_alphanumeric)
}

fn compile_regex(index: usize, pattern: &str) -> Result<Regex, RuleError> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| RuleError::InvalidRegex { index, message: err.to_string() })
}

impl KeywordMatcher {
    /// Validates and compiles `keywords` for `match_type`.
    ///
    /// Fails on an empty list, a keyword that is blank after trimming, or (for `regex`) a
    /// keyword that does not compile within the size limit; errors name the first bad index.
    pub fn new(match_type: MatchType, keywords: &[String]) -> Result<Self, RuleError> {
        if keywords.is_empty() {
            return Err(RuleError::NoKeywords);
        }
        if let Some(index) = keywords.iter().position(|k| k.trim().is_empty()) {
            return Err(RuleError::EmptyKeyword { index });
        }
        let normalized = || keywords.iter().map(|k| normalize(k));
        let inner = match match_type {
            MatchType::Exact => Matcher::Exact(normalized().collect()),
            MatchType::StartsWith => Matcher::StartsWith(normalized().collect()),
            MatchType::Contains => Matcher::Contains(normalized().map(Phrase::new).collect()),
            MatchType::Regex => {
                // Each keyword is compiled on its own first so that an error names its index.
                let patterns: Vec<&str> = keywords.iter().map(|k| k.trim()).collect();
                let regexes = patterns
                    .iter()
                    .enumerate()
                    .map(|(index, pattern)| compile_regex(index, pattern))
                    .collect::<Result<Vec<_>, _>>()?;
                if regexes.len() == 1 {
                    Matcher::Regexes(regexes)
                } else {
                    match RegexSetBuilder::new(&patterns).case_insensitive(true).size_limit(REGEX_SIZE_LIMIT).build() {
                        Ok(set) => Matcher::RegexSet(set),
                        Err(_) => Matcher::Regexes(regexes),
                    }
                }
            }
        };
        Ok(Self { inner })
    }

    /// Whether any keyword matches. `normalized` is the output of [`normalize`].
    pub fn matches(&self, normalized: &str) -> bool {
        match &self.inner {
            Matcher::Exact(keywords) => keywords.iter().any(|k| k == normalized),
            Matcher::StartsWith(keywords) => keywords.iter().any(|k| normalized.starts_with(k)),
            Matcher::Contains(phrases) => phrases.iter().any(|p| p.occurs_in(normalized)),
            Matcher::RegexSet(set) => set.is_match(normalized),
            Matcher::Regexes(regexes) => regexes.iter().any(|r| r.is_match(normalized)),
        }
    }
}

/// A keyword rule with its matcher ready.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule as stored.
    pub rule: KeywordRule,
    matcher: KeywordMatcher,
}

impl CompiledRule {
    /// Validates and compiles the rule's keywords.
    pub fn compile(rule: KeywordRule) -> Result<Self, RuleError> {
        let matcher = KeywordMatcher::new(rule.match_type, &rule.keywords)?;
        Ok(Self { rule, matcher })
    }

    /// Whether the rule's keywords match (whether or not the rule is enabled).
    /// `normalized` is the output of [`normalize`].
    pub fn matches(&self, normalized: &str) -> bool {
        self.matcher.matches(normalized)
    }
}

/// Sorts rules into answering order: highest priority first, ties oldest (created_at) first,
/// then by id.
pub fn sort_for_matching(rules: &mut [CompiledRule]) {
    rules.sort_by(|a, b| {
        b.rule
            .priority
            .cmp(&a.rule.priority)
            .then_with(|| a.rule.created_at.cmp(&b.rule.created_at))
            .then_with(|| a.rule.id.cmp(&b.rule.id))
    });
}

/// The first enabled rule (in the order given, which callers have sorted) that matches
/// `normalized`.
pub fn first_match<'a>(rules: &'a [CompiledRule], normalized: &str) -> Option<&'a CompiledRule> {
    rules.iter().find(|rule| rule.rule.enabled && rule.matches(normalized))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::model::{ChatbotId, ResponseType, RuleId};

    fn keywords(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    fn matcher(match_type: MatchType, list: &[&str]) -> KeywordMatcher {
        KeywordMatcher::new(match_type, &keywords(list)).expect("valid keywords")
    }

    fn matches(match_type: MatchType, list: &[&str], message: &str) -> bool {
        matcher(match_type, list).matches(&normalize(message))
    }

    fn epoch() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn rule(id: u128, priority: i32, age_secs: i64, list: &[&str]) -> CompiledRule {
        let created_at = epoch() - Duration::seconds(age_secs);
        CompiledRule::compile(KeywordRule {
            id: RuleId(Uuid::from_u128(id)),
            chatbot_id: ChatbotId(Uuid::from_u128(1)),
            name: format!("rule {id}"),
            keywords: keywords(list),
            match_type: MatchType::Contains,
            response_type: ResponseType::Text,
            response: format!("answer {id}"),
            buttons: Vec::new(),
            priority,
            enabled: true,
            created_at,
            updated_at: created_at,
        })
        .expect("valid rule")
    }

    fn ids(rules: &[CompiledRule]) -> Vec<u128> {
        rules.iter().map(|r| r.rule.id.0.as_u128()).collect()
    }

    #[test]
    fn normalize_lowercases_and_trims() {
        assert_eq!(normalize("  Hello World \n"), "hello world");
        assert_eq!(normalize("ÉCOLE"), "école");
        assert_eq!(normalize(" \t "), "");
    }

    #[test]
    fn exact_matches_the_whole_message_only() {
        assert!(matches(MatchType::Exact, &["hello"], "hello"));
        assert!(!matches(MatchType::Exact, &["hello"], "hello there"));
        assert!(!matches(MatchType::Exact, &["hello"], "oh hello"));
        assert!(matches(MatchType::Exact, &["hi", "hello"], "hello"));
    }

    #[test]
    fn exact_ignores_case_and_surrounding_whitespace_on_both_sides() {
        assert!(matches(MatchType::Exact, &["  HeLLo "], "\thello\n"));
        assert!(matches(MatchType::Exact, &["Menu"], "  MENU  "));
        assert!(matches(MatchType::Exact, &["ÇA VA"], "ça va"));
    }

    #[test]
    fn starts_with_matches_a_plain_prefix() {
        assert!(matches(MatchType::StartsWith, &["order"], "Order 1234"));
        assert!(matches(MatchType::StartsWith, &["order"], "orders please"));
        assert!(matches(MatchType::StartsWith, &[" ORDER "], "  order"));
        assert!(!matches(MatchType::StartsWith, &["order"], "my order"));
    }

    #[test]
    fn contains_matches_whole_words_only() {
        let hi = &["hi"];
        assert!(matches(MatchType::Contains, hi, "hi"));
        assert!(matches(MatchType::Contains, hi, "Hi!"));
        assert!(matches(MatchType::Contains, hi, "oh hi there"));
        assert!(matches(MatchType::Contains, hi, "well,hi."));
        assert!(!matches(MatchType::Contains, hi, "this"));
        assert!(!matches(MatchType::Contains, hi, "hip"));
        assert!(!matches(MatchType::Contains, hi, "chip"));
        assert!(!matches(MatchType::Contains, hi, "hi5"));
    }

    #[test]
    fn contains_checks_later_occurrences_after_an_unbounded_one() {
        assert!(matches(MatchType::Contains, &["hi"], "this hi"));
        assert!(matches(MatchType::Contains, &["hi"], "hihi hi"));
        // Overlapping occurrences: only the second "x x" is bounded.
        assert!(matches(MatchType::Contains, &["x x"], "yx x x"));
    }

    #[test]
    fn contains_matches_multi_word_phrases() {
        let phrase = &["Track Order"];
        assert!(matches(MatchType::Contains, phrase, "please track order 5"));
        assert!(matches(MatchType::Contains, phrase, "TRACK ORDER"));
        assert!(!matches(MatchType::Contains, phrase, "backtrack order"));
        assert!(!matches(MatchType::Contains, phrase, "track orders"));
    }

    #[test]
    fn contains_word_boundaries_are_unicode_aware() {
        assert!(matches(MatchType::Contains, &["café"], "un café, merci"));
        assert!(!matches(MatchType::Contains, &["caf"], "un café"));
        assert!(!matches(MatchType::Contains, &["olá"], "holá"));
        assert!(matches(MatchType::Contains, &["olá"], "¡olá!"));
        assert!(matches(MatchType::Contains, &["日本"], "行く 日本 へ"));
        assert!(!matches(MatchType::Contains, &["日本"], "日本語"));
        assert!(matches(MatchType::Contains, &["hi"], "👋hi👋"));
    }

    #[test]
    fn contains_requires_boundaries_only_at_alphanumeric_keyword_ends() {
        assert!(matches(MatchType::Contains, &["?"], "price?"));
        assert!(matches(MatchType::Contains, &["c++"], "i like c++!"));
        assert!(!matches(MatchType::Contains, &["c++"], "abc++"));
        assert!(matches(MatchType::Contains, &[":)"], "thanks:)"));
    }

    #[test]
    fn regex_is_searched_anywhere_case_insensitively() {
        let order = &[r"order\s*#?\d+"];
        assert!(matches(MatchType::Regex, order, "Where is ORDER #123?"));
        assert!(matches(MatchType::Regex, order, "order42"));
        assert!(!matches(MatchType::Regex, order, "order none"));
        assert!(matches(MatchType::Regex, &[r"^HELLO$"], "  hello "));
    }

    #[test]
    fn regex_escapes_keep_their_case() {
        // Lowercasing `\D` into `\d` would flip its meaning.
        assert!(matches(MatchType::Regex, &[r"^\D+$"], "abc"));
        assert!(!matches(MatchType::Regex, &[r"^\D+$"], "123"));
    }

    #[test]
    fn regex_with_several_keywords_matches_any_of_them() {
        let list = &["^refund", r"money\s+back", "cancel"];
        assert!(matches(MatchType::Regex, list, "Refund please"));
        assert!(matches(MatchType::Regex, list, "i want my money  back"));
        assert!(matches(MatchType::Regex, list, "please CANCEL"));
        assert!(!matches(MatchType::Regex, list, "a refund"));
    }

    #[test]
    fn invalid_regex_reports_its_index() {
        let err = KeywordMatcher::new(MatchType::Regex, &keywords(&["ok", "fine", "(unclosed"])).unwrap_err();
        assert!(matches!(err, RuleError::InvalidRegex { index: 2, .. }), "{err:?}");
        assert!(err.to_string().starts_with("keywords[2] is not a valid regex: "));
    }

    #[test]
    fn oversized_regex_is_refused() {
        let err = KeywordMatcher::new(MatchType::Regex, &keywords(&[r"\w{1000}{1000}"])).unwrap_err();
        assert!(matches!(err, RuleError::InvalidRegex { index: 0, .. }), "{err:?}");
    }

    #[test]
    fn empty_keyword_lists_and_blank_keywords_are_refused() {
        for match_type in [MatchType::Exact, MatchType::Contains, MatchType::StartsWith, MatchType::Regex] {
            assert_eq!(KeywordMatcher::new(match_type, &[]).unwrap_err(), RuleError::NoKeywords);
            assert_eq!(
                KeywordMatcher::new(match_type, &keywords(&["ok", "  "])).unwrap_err(),
                RuleError::EmptyKeyword { index: 1 }
            );
        }
        assert_eq!(RuleError::EmptyKeyword { index: 1 }.to_string(), "keywords[1] must not be empty");
    }

    #[test]
    fn sort_puts_highest_priority_first_then_oldest() {
        let mut rules = vec![
            rule(1, 0, 10, &["a"]),
            rule(2, 5, 0, &["a"]),
            rule(3, 5, 30, &["a"]),
            rule(4, -1, 100, &["a"]),
            rule(5, 0, 20, &["a"]),
        ];
        sort_for_matching(&mut rules);
        assert_eq!(ids(&rules), vec![3, 2, 5, 1, 4]);
    }

    #[test]
    fn sort_breaks_full_ties_by_id() {
        let mut rules = vec![rule(9, 1, 0, &["a"]), rule(7, 1, 0, &["a"]), rule(8, 1, 0, &["a"])];
        sort_for_matching(&mut rules);
        assert_eq!(ids(&rules), vec![7, 8, 9]);
    }

    #[test]
    fn first_match_takes_the_first_matching_rule_in_order() {
        let mut rules =
            vec![rule(1, 0, 0, &["order"]), rule(2, 10, 0, &["refund"]), rule(3, 10, 5, &["order", "track"])];
        sort_for_matching(&mut rules);
        let found = first_match(&rules, &normalize("Track my ORDER"));
        assert_eq!(found.map(|r| r.rule.id.0.as_u128()), Some(3));
        assert!(first_match(&rules, "nothing here").is_none());
    }

    #[test]
    fn first_match_skips_disabled_rules() {
        let mut rules = vec![rule(1, 10, 0, &["hello"]), rule(2, 0, 0, &["hello"])];
        rules[0].rule.enabled = false;
        let found = first_match(&rules, "hello");
        assert_eq!(found.map(|r| r.rule.id.0.as_u128()), Some(2));
        rules[1].rule.enabled = false;
        assert!(first_match(&rules, "hello").is_none());
    }

    #[test]
    fn compile_refuses_a_rule_with_a_bad_regex() {
        let mut bad = rule(1, 0, 0, &["x"]).rule;
        bad.match_type = MatchType::Regex;
        bad.keywords = keywords(&["[a-"]);
        assert!(matches!(CompiledRule::compile(bad).unwrap_err(), RuleError::InvalidRegex { index: 0, .. }));
    }

    /// Reference for `contains` with a keyword of alphanumeric words separated by single spaces:
    /// the message, cut into maximal runs of alphanumeric and other characters, holds the
    /// keyword's words as whole runs with single-space runs between them.
    fn reference_contains(message: &str, keyword: &str) -> bool {
        let mut runs: Vec<(bool, String)> = Vec::new();
        for c in message.chars() {
            let alphanumeric = c.is_alphanumeric();
            match runs.last_mut() {
                Some((kind, text)) if *kind == alphanumeric => text.push(c),
                _ => runs.push((alphanumeric, c.to_string())),
            }
        }
        let mut pattern: Vec<(bool, &str)> = Vec::new();
        for (i, word) in keyword.split(' ').enumerate() {
            if i > 0 {
                pattern.push((false, " "));
            }
            pattern.push((true, word));
        }
        runs.windows(pattern.len()).any(|window| {
            window
                .iter()
                .zip(&pattern)
                .all(|((kind, text), (want_kind, want_text))| kind == want_kind && text == want_text)
        })
    }

    const VOCABULARY: &[&str] = &["hi", "this", "x", "é", "日本", "a1", "ß", "ok"];
    const SEPARATORS: &[&str] = &[" ", " ", "  ", "!", "-", ", ", "\n", "👋"];

    fn keyword_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(VOCABULARY), 1..=3).prop_map(|w| w.join(" "))
    }

    fn message_strategy() -> impl Strategy<Value = String> {
        let built = prop::collection::vec((prop::sample::select(VOCABULARY), prop::sample::select(SEPARATORS)), 0..8)
            .prop_map(|parts| parts.into_iter().flat_map(|(w, s)| [w, s]).collect());
        prop_oneof![built, any::<String>()]
    }

    proptest! {
        #[test]
        fn contains_never_panics_on_arbitrary_unicode(message in any::<String>(), keyword in any::<String>()) {
            if let Ok(m) = KeywordMatcher::new(MatchType::Contains, &[keyword]) {
                let _ = m.matches(&normalize(&message));
                let _ = m.matches(&message);
            }
        }

        #[test]
        fn contains_agrees_with_a_word_sequence_reference(message in message_strategy(), keyword in keyword_strategy()) {
            let normalized = normalize(&message);
            let m = KeywordMatcher::new(MatchType::Contains, std::slice::from_ref(&keyword)).unwrap();
            prop_assert_eq!(m.matches(&normalized), reference_contains(&normalized, &keyword));
        }

        #[test]
        fn a_message_exact_matches_itself(message in any::<String>()) {
            prop_assume!(!message.trim().is_empty());
            let m = KeywordMatcher::new(MatchType::Exact, std::slice::from_ref(&message)).unwrap();
            prop_assert!(m.matches(&normalize(&message)));
        }
    }
}
