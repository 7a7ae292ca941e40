//! Crash safety: a `baton serve` process under concurrent load is killed with SIGKILL at a
//! random moment and restarted on the same data dir, several times. Every acknowledged
//! message must be there exactly once, in contiguous order with its replies, the dedupe
//! memory must survive, and a paused conversation must stay paused.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{json, Value};

use crate::cli::{admin_key_file, ServerProcess};
use crate::helpers::body;

/// What the keyword rule answers to messages mentioning "price".
const RULE_REPLY: &str = "Plans start at 10 EUR.";
/// Kill-and-restart rounds.
const CYCLES: usize = 4;
/// Concurrent clients posting during a round.
const CLIENTS: usize = 16;
/// Distinct conversations (providers) the clients write to; index 0 is the paused one.
const CONVERSATIONS: usize = 50;
/// The kill comes this many milliseconds after the load starts.
const KILL_AFTER_MS: std::ops::Range<u64> = 200..1500;
/// A round's clients stop on their own after this many requests each (a bound, rarely reached).
const MAX_REQUESTS_PER_CLIENT: usize = 400;

/// A message a client posted.
#[derive(Debug, Clone)]
struct Posted {
    provider: usize,
    provider_message_id: String,
    text: String,
}

/// A message the server answered 200 to: it must survive any crash.
#[derive(Debug, Clone)]
struct Acknowledged {
    posted: Posted,
    message_id: String,
    replies: Vec<String>,
}

fn provider_id(index: usize) -> String {
    format!("+1555{index:07}")
}

/// The text client `client` sends as its `i`th message: some match the keyword rule.
fn text_for(client: usize, i: usize) -> String {
    if i % 3 == 0 {
        format!("what is the price? ({client}/{i})")
    } else {
        format!("hello from {client}/{i}")
    }
}

/// Posts `posted` to `handle` at `url`; `None` when the server did not answer (it was killed).
/// Returns the acknowledgement and the answer's `duplicate` flag.
async fn post(http: &reqwest::Client, url: &str, key: &str, posted: &Posted) -> Option<(Acknowledged, bool)> {
    let payload = json!({
        "channelId": "wa-main",
        "channelName": "WhatsApp",
        "providerId": provider_id(posted.provider),
        "message": { "id": posted.provider_message_id, "type": "text", "text": posted.text },
    });
    let response = http.post(url).header("X-API-Key", key).json(&payload).send().await.ok()?;
    let status = response.status();
    let text = response.text().await.ok()?;
    assert_eq!(status, 200, "handle answered {status}: {text}");
    let answer: Value = serde_json::from_str(&text).ok()?;
    let replies = answer["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("no replies in {answer}"))
        .iter()
        .map(|r| r["text"].as_str().expect("reply text").to_string())
        .collect();
    let message_id = answer["message_id"].as_str().expect("message_id").to_string();
    let duplicate = answer["duplicate"].as_bool().unwrap_or_else(|| panic!("no duplicate flag in {answer}"));
    Some((Acknowledged { posted: posted.clone(), message_id, replies }, duplicate))
}

/// Posts messages until the server goes away; returns what it acknowledged and the
/// message it was posting when the server died (stored or not: nobody knows).
async fn post_until_the_crash(
    http: reqwest::Client,
    url: String,
    key: String,
    cycle: usize,
    client: usize,
) -> (Vec<Acknowledged>, Option<Posted>) {
    let mut acknowledged = Vec::new();
    for i in 0..MAX_REQUESTS_PER_CLIENT {
        let posted = Posted {
            provider: rand::thread_rng().gen_range(0..CONVERSATIONS),
            provider_message_id: format!("crash-{cycle}-{client}-{i}"),
            text: text_for(client, i),
        };
        match post(&http, &url, &key, &posted).await {
            Some((ack, duplicate)) => {
                assert!(!duplicate, "a fresh message id was taken for a duplicate: {ack:?}");
                acknowledged.push(ack);
            }
            None => return (acknowledged, Some(posted)),
        }
    }
    (acknowledged, None)
}

/// Every message of a conversation, in the order the API gives them (paged).
async fn all_messages(server: &ServerProcess, key: &str, conversation: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut after_seq = 0;
    loop {
        let path = format!("/v1/conversations/{conversation}/messages?after_seq={after_seq}&limit=100");
        let response = server.get(&path, key).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let page = body(response).await;
        messages.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_after_seq"].as_u64() {
            Some(next) => after_seq = next,
            None => return messages,
        }
    }
}

/// Every conversation of `bot`, by provider id (paged).
async fn all_conversations(server: &ServerProcess, key: &str, bot: &str) -> HashMap<String, Value> {
    let mut conversations = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/chatbots/{bot}/conversations?limit=20");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = server.get(&path, key).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let page = body(response).await;
        for conversation in page["items"].as_array().expect("items") {
            let provider = conversation["provider_id"].as_str().expect("provider_id").to_string();
            let previous = conversations.insert(provider.clone(), conversation.clone());
            assert!(previous.is_none(), "conversation of {provider} listed twice");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return conversations,
        }
    }
}

/// Checks the whole store against what was acknowledged so far.
async fn verify(
    server: &ServerProcess,
    key: &str,
    bot: &str,
    acknowledged: &[Acknowledged],
    paused_after_seq: u64,
    cycle: usize,
) {
    let conversations = all_conversations(server, key, bot).await;
    let mut by_provider: HashMap<String, Vec<&Acknowledged>> = HashMap::new();
    for ack in acknowledged {
        by_provider.entry(provider_id(ack.posted.provider)).or_default().push(ack);
    }
    for provider in by_provider.keys() {
        assert!(conversations.contains_key(provider), "cycle {cycle}: acknowledged conversation {provider} is gone");
    }
    for (provider, conversation) in &conversations {
        let id = conversation["id"].as_str().expect("conversation id");
        let messages = all_messages(server, key, id).await;
        let context = format!("cycle {cycle}, conversation {provider}");

        // seq is exactly 1..=n, message ids and provider message ids are unique.
        for (index, message) in messages.iter().enumerate() {
            assert_eq!(
                message["seq"].as_u64(),
                Some(index as u64 + 1),
                "{context}: seq gap or disorder at {index}: {message}"
            );
        }
        let mut ids = HashSet::new();
        let mut provider_ids = HashMap::new();
        for (index, message) in messages.iter().enumerate() {
            assert!(ids.insert(message["id"].as_str().expect("message id")), "{context}: message id twice: {message}");
            if let Some(pid) = message["provider_message_id"].as_str() {
                let earlier = provider_ids.insert(pid.to_string(), index);
                assert!(earlier.is_none(), "{context}: provider message {pid} stored twice");
            }
        }
        assert_eq!(
            conversation["message_count"].as_u64(),
            Some(messages.len() as u64),
            "{context}: message_count disagrees with the stored messages"
        );

        // Every acknowledged message is there once, with its replies right after it.
        for ack in by_provider.get(provider).map(Vec::as_slice).unwrap_or_default() {
            let index = *provider_ids
                .get(&ack.posted.provider_message_id)
                .unwrap_or_else(|| panic!("{context}: acknowledged message {} lost", ack.posted.provider_message_id));
            let stored = &messages[index];
            assert_eq!(stored["id"].as_str(), Some(ack.message_id.as_str()), "{context}: message_id changed: {stored}");
            assert_eq!(stored["role"], "user", "{context}: {stored}");
            assert_eq!(stored["content"].as_str(), Some(ack.posted.text.as_str()), "{context}: {stored}");
            for (offset, reply) in ack.replies.iter().enumerate() {
                let after = messages.get(index + 1 + offset);
                let after = after
                    .unwrap_or_else(|| panic!("{context}: reply {offset} of {} lost", ack.posted.provider_message_id));
                assert_eq!(
                    after["role"], "assistant",
                    "{context}: reply of {} not right after it: {after}",
                    ack.posted.provider_message_id
                );
                assert_eq!(
                    after["content"].as_str(),
                    Some(reply.as_str()),
                    "{context}: reply of {} differs",
                    ack.posted.provider_message_id
                );
            }
        }

        // The paused conversation stayed paused and got no bot reply after the pause.
        if *provider == provider_id(0) {
            assert_eq!(conversation["bot_active"], false, "{context}: the paused conversation is active again");
            for message in messages.iter().skip(paused_after_seq as usize) {
                assert_eq!(message["role"], "user", "{context}: bot reply after the pause: {message}");
            }
        }
    }
}

/// Starts the server again on `data_dir`; the admin key comes from `admin.key`.
async fn restart(data_dir: &Path) -> (ServerProcess, String) {
    let server = ServerProcess::start(data_dir).await;
    (server, admin_key_file(data_dir))
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_under_load_exactly_once_and_in_order() {
    // Arrange: a chatbot with a keyword rule, and conversation 0 paused by an agent.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut first = ServerProcess::start(&data_dir).await;
    let key = first.printed_key();
    let bot = first.create_chatbot(&key, "crash-bot").await;
    let rule = json!({ "keywords": ["price"], "match_type": "contains", "response": RULE_REPLY });
    assert_eq!(first.post(&format!("/v1/chatbots/{bot}/keywords"), &key, &rule).await.status(), 201);
    let opened = first.handle(&key, &bot, &provider_id(0), "hi", "crash-setup-0").await;
    assert_eq!(opened.status(), 200);
    let paused_conversation = body(opened).await["conversation_id"].as_str().expect("conversation_id").to_string();
    let pause = first
        .post(&format!("/v1/conversations/{paused_conversation}/bot-control"), &key, &json!({ "action": "pause" }))
        .await;
    assert_eq!(pause.status(), 200, "pause");
    assert_eq!(body(pause).await["bot_active"], false);
    let paused_after_seq = all_messages(&first, &key, &paused_conversation).await.len() as u64;
    let mut server = first;
    let mut acknowledged: Vec<Acknowledged> = Vec::new();

    for cycle in 0..CYCLES {
        // Act: load, then SIGKILL at a random moment, then restart on the same dir.
        let url = server.url(&format!("/v1/chatbots/{bot}/conversations/handle"));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                tokio::spawn(post_until_the_crash(server.client.clone(), url.clone(), key.clone(), cycle, client))
            })
            .collect();
        let delay = rand::thread_rng().gen_range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        let mut this_cycle = Vec::new();
        let mut unanswered = Vec::new();
        for client in clients {
            match client.await {
                Ok((acks, in_flight)) => {
                    this_cycle.extend(acks);
                    unanswered.extend(in_flight);
                }
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        for ack in this_cycle.iter().filter(|a| a.posted.provider == 0) {
            assert!(ack.replies.is_empty(), "cycle {cycle}: the paused conversation got a reply: {:?}", ack.replies);
        }
        eprintln!("cycle {cycle}: killed after {delay} ms, {} messages acknowledged", this_cycle.len());
        acknowledged.extend(this_cycle);
        let (restarted, restarted_key) = restart(&data_dir).await;
        assert_eq!(restarted_key, key, "admin.key changed across a crash");
        server = restarted;
        let url = server.url(&format!("/v1/chatbots/{bot}/conversations/handle"));

        // Assert: the dedupe memory survived the crash...
        let index = rand::thread_rng().gen_range(0..acknowledged.len().max(1));
        if let Some(ack) = acknowledged.get(index) {
            let (again, duplicate) = post(&server.client, &url, &key, &ack.posted).await.expect("re-post answered");
            let id = &ack.posted.provider_message_id;
            assert!(duplicate, "cycle {cycle}: re-posted {id} after the crash not seen as a duplicate");
            assert_eq!(again.message_id, ack.message_id, "cycle {cycle}: duplicate {id} answered another message");
            assert_eq!(again.replies, ack.replies, "cycle {cycle}: duplicate {id} answered other replies");
        }
        // ...the provider's retries of the requests cut by the crash are each answered, once...
        let mut stored_before_the_crash = 0;
        for posted in &unanswered {
            let (ack, duplicate) = post(&server.client, &url, &key, posted).await.expect("retry answered");
            stored_before_the_crash += usize::from(duplicate);
            acknowledged.push(ack);
        }
        eprintln!("cycle {cycle}: {} retries, {stored_before_the_crash} of them already stored", unanswered.len());
        // ...and every acknowledged message is there exactly once, in contiguous order.
        verify(&server, &key, &bot, &acknowledged, paused_after_seq, cycle).await;
        let status = body(server.get(&format!("/v1/conversations/{paused_conversation}"), &key).await).await;
        assert_eq!(status["bot_active"], false, "cycle {cycle}: pause lost in the crash");
    }

    assert!(acknowledged.len() >= CYCLES, "the load acknowledged only {} messages", acknowledged.len());
    assert!(acknowledged.iter().any(|a| a.replies.iter().any(|r| r == RULE_REPLY)), "the keyword rule never answered");
}
