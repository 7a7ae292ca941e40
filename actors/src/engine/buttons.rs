//! Quick-reply buttons: the limits enforced when a message's buttons are saved, the ids
//! generated for buttons saved without one, and finding the button a user's answer picks.

use std::collections::HashSet;

use crate::model::Button;

/// Most buttons one message may carry (1–3 render as buttons, 4–10 as a list).
pub const MAX_BUTTONS: usize = 10;
/// Longest button title, in characters.
pub const MAX_TITLE_CHARS: usize = 20;

/// Why a button list cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ButtonError {
    #[error("{field}: at most 10 buttons are allowed, got {count}")]
    TooMany { field: String, count: usize },
    #[error("{field}[{index}].title must not be empty")]
    EmptyTitle { field: String, index: usize },
    #[error("{field}[{index}].title must be at most 20 characters, got {chars}")]
    TitleTooLong { field: String, index: usize, chars: usize },
    #[error("{field}[{index}].id \"{id}\" is used twice")]
    DuplicateId { field: String, index: usize, id: String },
}

impl ButtonError {
    /// The offending field path, e.g. `greeting_buttons[3].title`.
    pub fn field(&self) -> String {
        match self {
            Self::TooMany { field, .. } => field.clone(),
            Self::EmptyTitle { field, index } | Self::TitleTooLong { field, index, .. } => {
                format!("{field}[{index}].title")
            }
            Self::DuplicateId { field, index, .. } => format!("{field}[{index}].id"),
        }
    }
}

/// Validates buttons and fills in missing ids.
///
/// Titles and ids are trimmed; at most [`MAX_BUTTONS`] buttons, each title 1 to
/// [`MAX_TITLE_CHARS`] characters. A given id is kept; a missing one is generated from the
/// title as a slug (`"Track Order!"` → `"track_order"`), or `btn_{n}` (1-based position, then
/// `btn_{n}_2`, `btn_{n}_3`, …) when the slug is empty or taken. Ids are compared ignoring
/// case, as [`pick`] does, so the resulting ids are unique in that sense too; two given ids
/// that are equal that way are refused. `field` is the JSON field named in errors
/// (e.g. `greeting_buttons`).
pub fn normalize_buttons(field: &str, buttons: Vec<Button>) -> Result<Vec<Button>, ButtonError> {
    if buttons.len() > MAX_BUTTONS {
        return Err(ButtonError::TooMany { field: field.to_string(), count: buttons.len() });
    }

    let mut given_ids = HashSet::new();
    let mut checked = Vec::with_capacity(buttons.len());
    for (index, button) in buttons.into_iter().enumerate() {
        let title = button.title.trim().to_string();
        let chars = title.chars().count();
        if chars == 0 {
            return Err(ButtonError::EmptyTitle { field: field.to_string(), index });
        }
        if chars > MAX_TITLE_CHARS {
            return Err(ButtonError::TitleTooLong { field: field.to_string(), index, chars });
        }
        let id = button.id.trim().to_string();
        if !id.is_empty() && !given_ids.insert(id.to_lowercase()) {
            return Err(ButtonError::DuplicateId { field: field.to_string(), index, id });
        }
        checked.push(Button { id, title });
    }

    // Every given id is reserved up front, so a generated id never takes one that a later
    // button was given explicitly.
    let mut used = given_ids;
    for (index, button) in checked.iter_mut().enumerate() {
        if button.id.is_empty() {
            button.id = unused_id(&button.title, index, &used);
            used.insert(button.id.clone());
        }
    }
    Ok(checked)
}

/// An id for the button at `index` titled `title` that is not in `used` (which holds
/// lowercase ids; generated ids are lowercase already).
fn unused_id(title: &str, index: usize, used: &HashSet<String>) -> String {
    let slug = slug(title);
    if !slug.is_empty() && !used.contains(&slug) {
        return slug;
    }
    let base = format!("btn_{}", index + 1);
    if !used.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|candidate| !used.contains(candidate))
        .expect("an unbounded counter finds a free id")
}

/// Lowercase ASCII letters and digits of `title`, every other run of characters made one `_`,
/// without leading or trailing `_`.
fn slug(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    if slug.ends_with('_') {
        slug.pop();
    }
    slug
}

/// The button a user's answer picks: equal to a button's id or title, ignoring case and
/// surrounding whitespace. An id match wins over a title match on another button.
pub fn pick<'a>(buttons: &'a [Button], answer: &str) -> Option<&'a Button> {
    let answer = answer.trim().to_lowercase();
    if answer.is_empty() {
        return None;
    }
    let same = |text: &str| text.trim().to_lowercase() == answer;
    buttons.iter().find(|b| same(&b.id)).or_else(|| buttons.iter().find(|b| same(&b.title)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn button(id: &str, title: &str) -> Button {
        Button { id: id.to_string(), title: title.to_string() }
    }

    fn titled(titles: &[&str]) -> Vec<Button> {
        titles.iter().map(|t| button("", t)).collect()
    }

    fn ids(buttons: &[Button]) -> Vec<&str> {
        buttons.iter().map(|b| b.id.as_str()).collect()
    }

    #[test]
    fn ten_buttons_are_allowed_and_eleven_are_not() {
        let ten: Vec<_> = (0..10).map(|i| button("", &format!("Option {i}"))).collect();
        assert_eq!(normalize_buttons("greeting_buttons", ten).unwrap().len(), 10);

        let eleven: Vec<_> = (0..11).map(|i| button("", &format!("Option {i}"))).collect();
        let err = normalize_buttons("greeting_buttons", eleven).unwrap_err();
        assert_eq!(err, ButtonError::TooMany { field: "greeting_buttons".into(), count: 11 });
        assert_eq!(err.field(), "greeting_buttons");
        assert_eq!(err.to_string(), "greeting_buttons: at most 10 buttons are allowed, got 11");
    }

    #[test]
    fn no_buttons_is_fine() {
        assert_eq!(normalize_buttons("buttons", Vec::new()).unwrap(), Vec::new());
    }

    #[test]
    fn a_title_of_twenty_characters_is_allowed_and_twenty_one_is_not() {
        let twenty = "a".repeat(20);
        assert!(normalize_buttons("buttons", titled(&[&twenty])).is_ok());

        let twenty_one = "a".repeat(21);
        let err = normalize_buttons("buttons", titled(&["ok", &twenty_one])).unwrap_err();
        assert_eq!(err, ButtonError::TitleTooLong { field: "buttons".into(), index: 1, chars: 21 });
        assert_eq!(err.field(), "buttons[1].title");
        assert_eq!(err.to_string(), "buttons[1].title must be at most 20 characters, got 21");
    }

    #[test]
    fn titles_are_measured_in_characters_not_bytes() {
        let emoji = "🎉".repeat(20);
        let accented = "é".repeat(20);
        let saved = normalize_buttons("buttons", titled(&[&emoji, &accented])).unwrap();
        assert_eq!(saved[0].title, emoji);
        assert_eq!(saved[1].title, accented);

        let err = normalize_buttons("buttons", titled(&[&"ü".repeat(21)])).unwrap_err();
        assert!(matches!(err, ButtonError::TitleTooLong { chars: 21, .. }));
    }

    #[test]
    fn titles_are_trimmed_before_they_are_measured() {
        let padded = format!("  {}  ", "a".repeat(20));
        let saved = normalize_buttons("buttons", titled(&[&padded])).unwrap();
        assert_eq!(saved[0].title, "a".repeat(20));
    }

    #[test]
    fn blank_titles_are_refused() {
        let err = normalize_buttons("fallback_buttons", titled(&["Yes", "   "])).unwrap_err();
        assert_eq!(err, ButtonError::EmptyTitle { field: "fallback_buttons".into(), index: 1 });
        assert_eq!(err.field(), "fallback_buttons[1].title");
        assert_eq!(err.to_string(), "fallback_buttons[1].title must not be empty");
    }

    #[test]
    fn missing_ids_are_generated_from_titles() {
        let saved =
            normalize_buttons("buttons", titled(&["Track Order!", "  Talk to a human ", "FAQ #2", "--Yes--"])).unwrap();
        assert_eq!(ids(&saved), ["track_order", "talk_to_a_human", "faq_2", "yes"]);
    }

    #[test]
    fn given_ids_are_kept_trimmed() {
        let saved = normalize_buttons("buttons", vec![button(" Custom-ID ", "Yes")]).unwrap();
        assert_eq!(ids(&saved), ["Custom-ID"]);
    }

    #[test]
    fn titles_without_ascii_letters_get_positional_ids() {
        let saved = normalize_buttons("buttons", titled(&["Yes", "👍", "日本語"])).unwrap();
        assert_eq!(ids(&saved), ["yes", "btn_2", "btn_3"]);
    }

    #[test]
    fn colliding_slugs_fall_back_to_positional_ids() {
        let saved = normalize_buttons("buttons", titled(&["Yes", "yes!", "YES?", "btn 2"])).unwrap();
        assert_eq!(ids(&saved), ["yes", "btn_2", "btn_3", "btn_4"]);
    }

    #[test]
    fn generated_ids_avoid_ids_given_to_later_buttons() {
        let saved =
            normalize_buttons("buttons", vec![button("", "Yes"), button("", "No"), button("YES", "Sure")]).unwrap();
        assert_eq!(ids(&saved), ["btn_1", "no", "YES"]);

        let saved =
            normalize_buttons("buttons", vec![button("", "👍"), button("btn_1", "One"), button("btn_1_2", "Two")])
                .unwrap();
        assert_eq!(ids(&saved), ["btn_1_3", "btn_1", "btn_1_2"]);
    }

    #[test]
    fn duplicate_given_ids_are_refused_ignoring_case() {
        let err =
            normalize_buttons("greeting_buttons", vec![button("a", "One"), button("b", "Two"), button(" A ", "Three")])
                .unwrap_err();
        assert_eq!(err, ButtonError::DuplicateId { field: "greeting_buttons".into(), index: 2, id: "A".into() });
        assert_eq!(err.field(), "greeting_buttons[2].id");
        assert_eq!(err.to_string(), "greeting_buttons[2].id \"A\" is used twice");
    }

    #[test]
    fn pick_matches_id_or_title_ignoring_case_and_whitespace() {
        let buttons = vec![button("track_order", "Track Order"), button("human", "Talk to us")];
        assert_eq!(pick(&buttons, "TRACK_ORDER").map(|b| b.id.as_str()), Some("track_order"));
        assert_eq!(pick(&buttons, "  track order ").map(|b| b.id.as_str()), Some("track_order"));
        assert_eq!(pick(&buttons, "talk TO us").map(|b| b.id.as_str()), Some("human"));
        assert_eq!(pick(&buttons, "Human").map(|b| b.id.as_str()), Some("human"));
        assert!(pick(&buttons, "track").is_none());
        assert!(pick(&buttons, "   ").is_none());
    }

    #[test]
    fn pick_handles_unicode_case() {
        let buttons = vec![button("cafe", "Café Crème")];
        assert!(pick(&buttons, "CAFÉ CRÈME").is_some());
    }

    #[test]
    fn pick_prefers_an_id_match_over_another_buttons_title() {
        let buttons = vec![button("b1", "yes"), button("yes", "Sure")];
        assert_eq!(pick(&buttons, "YES").map(|b| b.id.as_str()), Some("yes"));
    }

    #[test]
    fn slug_collapses_runs_and_trims_underscores() {
        assert_eq!(slug("  Hello,  World!! "), "hello_world");
        assert_eq!(slug("Café au lait"), "caf_au_lait");
        assert_eq!(slug("___"), "");
        assert_eq!(slug("a_b"), "a_b");
    }

    fn button_strategy() -> impl Strategy<Value = Button> {
        let id = prop_oneof![Just(String::new()), "[ab_ ]{0,3}", "btn_[0-9]{1,2}(_[0-9])?", "\\PC{0,6}",];
        let title = prop_oneof!["[A-Ba-b !]{0,5}", "\\PC{0,24}", "btn [0-9]{1,2}"];
        (id, title).prop_map(|(id, title)| Button { id, title })
    }

    proptest! {
        #[test]
        fn normalized_buttons_have_unique_non_empty_ids(buttons in prop::collection::vec(button_strategy(), 0..12)) {
            let count = buttons.len();
            if let Ok(saved) = normalize_buttons("buttons", buttons) {
                prop_assert_eq!(saved.len(), count);
                let mut seen = HashSet::new();
                for b in &saved {
                    prop_assert!(!b.id.is_empty());
                    prop_assert_eq!(b.id.trim(), b.id.as_str());
                    prop_assert!(seen.insert(b.id.to_lowercase()), "duplicate id {:?}", b.id);
                    let chars = b.title.chars().count();
                    prop_assert!((1..=MAX_TITLE_CHARS).contains(&chars));
                }
            }
        }

        #[test]
        fn every_saved_button_is_picked_by_its_own_id(buttons in prop::collection::vec(button_strategy(), 0..12)) {
            if let Ok(saved) = normalize_buttons("buttons", buttons) {
                for b in &saved {
                    prop_assert_eq!(pick(&saved, &b.id), Some(b));
                }
            }
        }
    }
}
