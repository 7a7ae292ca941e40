//! Benchmarks of the durable store: what one `handle` turn costs to write (the conversation
//! record, the user's message, the bot's reply and the provider id kept for deduplication),
//! raw with fsync off and acknowledged (written and then durable) with group commit under
//! several concurrent writers; and the read of a page of messages.
//!
//! Stores live in temp dirs (set `TMPDIR` to bench another disk); inputs and the runtime are
//! built outside the timed loops.

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton::Settings;
use baton_actors::model::{
    now, ChatbotId, Contact, ContactId, Conversation, ConversationId, Message, MessageId, Reply, TenantId,
};
use baton_actors::store::{ConversationWrite, HandleOutcome, Store, StoreConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use tempfile::TempDir;

/// Concurrent writers for the acknowledged-write bench (each on its own conversation).
const WRITERS: [usize; 3] = [1, 8, 64];

/// A store in a temp dir that lives as long as it.
struct Bench {
    store: Store,
    _dir: TempDir,
}

fn open(fsync: bool) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let defaults = Settings::defaults().storage.store_config();
    let store = Store::open(&StoreConfig {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: 64 << 20,
        fsync,
        ..defaults
    })
    .expect("store opens");
    Bench { store, _dir: dir }
}

/// A record built from its wire form, so the bench keeps compiling when a record gains an
/// optional field.
fn from_wire<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid record")
}

/// Writes a new conversation (with its contact) of `provider_id` and returns it.
fn new_conversation(store: &Store, bot: ChatbotId, provider_id: &str) -> Conversation {
    let at = now();
    let tenant = TenantId::new_random();
    let contact: Contact = from_wire(json!({
        "id": ContactId::derive(bot, provider_id), "tenant_id": tenant, "chatbot_id": bot,
        "provider_id": provider_id, "first_name": "Ada", "last_name": "Lovelace", "phones": [], "emails": [],
        "created_at": at, "updated_at": at,
    }));
    let conversation: Conversation = from_wire(json!({
        "id": ConversationId::derive(bot, "wa-main", provider_id), "tenant_id": tenant, "chatbot_id": bot,
        "channel_id": "wa-main", "channel_name": "WhatsApp", "contact_id": contact.id, "provider_id": provider_id,
        "status": "active", "bot_active": true, "next_seq": 1, "last_message_at": null,
        "created_at": at, "updated_at": at,
    }));
    let write = ConversationWrite {
        conversation: Some(&conversation),
        created: true,
        contact: Some(&contact),
        ..Default::default()
    };
    let _ = store.write_conversation(&write).expect("conversation written");
    conversation
}

/// The inputs of one `handle` turn: the user's message and the bot's reply, and the answer
/// kept for the provider's message id.
struct Turn {
    messages: [Message; 2],
    provider_message_id: String,
    outcome: HandleOutcome,
}

fn turn(conversation: &Conversation, seq: u64) -> Turn {
    let at = now();
    let provider_message_id = format!("wamid.{seq}");
    let (question, answer) = (MessageId::new_random(), MessageId::new_random());
    let message = |id: MessageId, seq: u64, role: &str, content: &str| -> Message {
        let mut wire = json!({
            "id": id, "conversation_id": conversation.id, "seq": seq, "role": role, "content": content,
            "message_type": "text", "tokens_used": null, "created_at": at,
        });
        if role == "user" {
            wire["provider_message_id"] = json!(provider_message_id);
        }
        from_wire(wire)
    };
    let reply = "Hello! Your order ships tomorrow.";
    let messages =
        [message(question, seq, "user", "hello, where is my order?"), message(answer, seq + 1, "assistant", reply)];
    let outcome = HandleOutcome {
        conversation_id: conversation.id,
        contact_id: conversation.contact_id,
        message_id: question,
        bot_active: true,
        replies: vec![from_wire::<Reply>(json!({ "id": answer, "type": "text", "text": reply }))],
    };
    Turn { messages, provider_message_id, outcome }
}

/// `count` turns continuing `conversation`.
fn turns(conversation: &Conversation, count: u64) -> Vec<Turn> {
    (0..count).map(|i| turn(conversation, conversation.next_seq + 2 * i)).collect()
}

/// Applies `turn` to `conversation` and writes it as the actor would: a turn that only appends
/// messages leaves the conversation record alone (the store derives `next_seq` and the times
/// from the newest message), so it is the two-insert path, not a journaled batch.
fn write_turn(store: &Store, conversation: &mut Conversation, turn: &Turn) -> baton_actors::store::CommitTicket {
    conversation.next_seq = turn.messages[1].seq + 1;
    conversation.last_message_at = Some(turn.messages[1].created_at);
    conversation.updated_at = turn.messages[1].created_at;
    store
        .write_conversation(&ConversationWrite {
            conversation: None,
            messages: &turn.messages,
            dedupe: Some((&turn.provider_message_id, &turn.outcome)),
            ..Default::default()
        })
        .expect("turn written")
}

fn raw_write(c: &mut Criterion) {
    let bench = open(false);
    let bot = ChatbotId::new_random();
    let mut conversation = new_conversation(&bench.store, bot, "+15550001");
    c.bench_function("write_conversation turn (2 messages + dedupe), fsync off", |b| {
        b.iter_custom(|iters| {
            let inputs = turns(&conversation, iters);
            let started = Instant::now();
            for input in &inputs {
                let _ = black_box(write_turn(&bench.store, &mut conversation, input));
            }
            started.elapsed()
        })
    });
}

fn acknowledged_write(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let bench = open(true);
    let bot = ChatbotId::new_random();
    let mut group = c.benchmark_group("write_conversation turn + durable, fsync on, per acknowledged write");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for writers in WRITERS {
        let mut conversations: Vec<Conversation> =
            (0..writers).map(|w| new_conversation(&bench.store, bot, &format!("+1555{writers:03}{w:04}"))).collect();
        runtime.block_on(bench.store.durable(bench.store.ticket_for_all())).expect("setup durable");
        group.bench_with_input(BenchmarkId::new("writers", writers), &writers, |b, &writers| {
            b.iter_custom(|iters| {
                // Spread `iters` writes over the writers; the time is that of all of them.
                let share = |w: usize| iters / writers as u64 + u64::from((w as u64) < iters % writers as u64);
                let work: Vec<(Conversation, Vec<Turn>)> = conversations
                    .drain(..)
                    .enumerate()
                    .map(|(w, c)| {
                        let t = turns(&c, share(w));
                        (c, t)
                    })
                    .collect();
                let store = bench.store.clone();
                let (elapsed, done) = runtime.block_on(async move {
                    let started = Instant::now();
                    let tasks: Vec<_> = work
                        .into_iter()
                        .map(|(mut conversation, inputs)| {
                            let store = store.clone();
                            tokio::spawn(async move {
                                for input in &inputs {
                                    let ticket = write_turn(&store, &mut conversation, input);
                                    store.durable(ticket).await.expect("durable");
                                }
                                conversation
                            })
                        })
                        .collect();
                    let mut done = Vec::with_capacity(tasks.len());
                    for task in tasks {
                        done.push(task.await.expect("writer task"));
                    }
                    (started.elapsed(), done)
                });
                conversations = done;
                elapsed
            })
        });
    }
    group.finish();
    bench.store.close().expect("store closes");
}

fn read_page(c: &mut Criterion) {
    let bench = open(false);
    let mut conversation = new_conversation(&bench.store, ChatbotId::new_random(), "+15550002");
    for input in turns(&conversation, 100) {
        let _ = write_turn(&bench.store, &mut conversation, &input);
    }
    assert_eq!(bench.store.messages(conversation.id, 0, 500).expect("read").len(), 200);
    c.bench_function("messages(conversation, after 0, limit 50) of 200", |b| {
        b.iter(|| bench.store.messages(black_box(conversation.id), 0, 50).expect("read"))
    });
}

criterion_group!(benches, raw_write, acknowledged_write, read_page);
criterion_main!(benches);
