//! A cache of each chatbot's configuration ready for the engine, so the hot path never
//! decodes settings or compiles a regex. Configuration writes invalidate their chatbot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::engine::BotRules;
use crate::model::{Chatbot, ChatbotId};
use crate::store::{Store, StoreError};

/// A chatbot with its engine-ready rules and its AI contexts.
#[derive(Debug)]
pub struct BotConfig {
    pub chatbot: Chatbot,
    pub rules: BotRules,
    /// Highest priority first.
    pub ai_contexts: Vec<crate::model::AiContext>,
}

/// Shared cache of [`BotConfig`]s; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BotConfigs {
    entries: Arc<RwLock<HashMap<ChatbotId, Arc<BotConfig>>>>,
    /// Bumped by every invalidation, so a load that raced with a write is not cached.
    generation: Arc<AtomicU64>,
}

impl BotConfigs {
    /// The configuration of `id`, loaded from `store` when not cached; `None` if there is no such chatbot.
    pub fn get(&self, store: &Store, id: ChatbotId) -> Result<Option<Arc<BotConfig>>, StoreError> {
        if let Some(config) = self.entries.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(Some(Arc::clone(config)));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(chatbot) = store.chatbot(id)? else { return Ok(None) };
        let rules = BotRules::new(chatbot.settings.clone(), store.rules_of(id)?, store.flows_of(id)?);
        let ai_contexts = store.ai_contexts_of(id)?;
        let config = Arc::new(BotConfig { chatbot, rules, ai_contexts });
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            entries.insert(id, Arc::clone(&config));
        }
        Ok(Some(config))
    }

    /// Forgets `id` after its configuration changed.
    pub fn invalidate(&self, id: ChatbotId) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(&id);
    }
}
