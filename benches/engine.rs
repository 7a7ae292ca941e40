//! Benchmarks of keyword matching: how long the rule engine takes to answer a message
//! against a chatbot's compiled keyword rules, and the normalization every message goes through.

use std::hint::black_box;

use baton_actors::engine::rules::{first_match, normalize, sort_for_matching, CompiledRule};
use baton_actors::model::{ChatbotId, KeywordRule, MatchType, ResponseType, RuleId};
use chrono::{Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use uuid::Uuid;

const RULES: usize = 100;

/// A typical customer message of 20 words that none of the generated keywords match.
const MESSAGE: &str = "Hello there, I ordered a blue jacket last week and \
                       would like to know when it will finally arrive here";

/// A rule whose keywords (none of which occur in [`MESSAGE`]) use the `index`-th match type.
fn rule(index: usize) -> CompiledRule {
    let match_type = [MatchType::Exact, MatchType::Contains, MatchType::StartsWith, MatchType::Regex][index % 4];
    let keywords = match match_type {
        MatchType::Regex => {
            vec![format!(r"\border\s*#?{index}\d*\b"), format!(r"^refund\s+{index}"), format!(r"ticket[-_ ]?{index}x")]
        }
        _ => vec![format!("keyword {index}"), format!("topic{index}"), format!("question number {index}")],
    };
    let created_at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(index as i64);
    CompiledRule::compile(KeywordRule {
        id: RuleId(Uuid::from_u128(index as u128 + 1)),
        chatbot_id: ChatbotId(Uuid::from_u128(1)),
        name: format!("rule {index}"),
        keywords,
        match_type,
        response_type: ResponseType::Text,
        response: format!("answer {index}"),
        buttons: Vec::new(),
        priority: (RULES - index) as i32,
        enabled: true,
        created_at,
        updated_at: created_at,
    })
    .expect("benchmark rules are valid")
}

fn rules() -> Vec<CompiledRule> {
    let mut rules: Vec<_> = (0..RULES).map(rule).collect();
    sort_for_matching(&mut rules);
    rules
}

fn matching(c: &mut Criterion) {
    let message = normalize(MESSAGE);
    let none_match = rules();
    assert!(first_match(&none_match, &message).is_none());

    let mut fiftieth_matches = rules();
    fiftieth_matches[49] = {
        let mut hit = fiftieth_matches[49].rule.clone();
        hit.match_type = MatchType::Contains;
        hit.keywords = vec!["blue jacket".into()];
        CompiledRule::compile(hit).expect("valid rule")
    };
    let found = first_match(&fiftieth_matches, &message).expect("the 50th rule matches");
    assert_eq!(found.rule.id, fiftieth_matches[49].rule.id);

    c.bench_function("first_match 100 rules, none match", |b| {
        b.iter(|| first_match(black_box(&none_match), black_box(&message)))
    });
    c.bench_function("first_match 100 rules, 50th matches", |b| {
        b.iter(|| first_match(black_box(&fiftieth_matches), black_box(&message)))
    });
}

fn normalizing(c: &mut Criterion) {
    let text = format!("  {MESSAGE}!  \n");
    c.bench_function("normalize a typical message", |b| b.iter(|| normalize(black_box(&text))));
}

criterion_group!(benches, matching, normalizing);
criterion_main!(benches);
