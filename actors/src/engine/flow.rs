//! Multi-step flows: validating a flow before it is saved, finding the flow a message or a
//! custom event starts, and driving a running flow one input (or one API answer) at a time.
//!
//! Driving is a pure state machine. The caller keeps a flow's [`Position`] (as the step's
//! name, see [`find_step`]) and its variables; each call returns the replies to send, where the
//! flow now waits, and the effects the actor performs: an HTTP call ([`FetchRequest`], answered
//! through [`take_fetch`]) or a hand-over to humans ([`TransferRequest`]). Every path ends or
//! waits, so a session can never be left stuck, whatever the flow looks like.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Map, Value};

use super::buttons::{self, ButtonError};
use super::rules::KeywordMatcher;
use super::template::{render, render_json, render_url};
use super::ReplyDraft;
use crate::model::{
    ApiFetchConfig, Button, Flow, FlowStep, InputType, MatchType, PanelConfig, StepType, TeamId, WhatsappFlowRef,
};

/// Longest flow name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest variable name (`store_as`, mapping keys), in characters.
pub const MAX_VARIABLE_CHARS: usize = 64;
/// Longest time an `api_fetch` step may wait for its answer.
pub const MAX_FETCH_TIMEOUT_MS: u64 = 30_000;
/// The HTTP methods an `api_fetch` step may use.
const FETCH_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Marks a trigger entry started by a custom event rather than by words in a message.
const EVENT_PREFIX: &str = "event:";
/// How a panel field may render.
const DISPLAY_TYPES: [&str; 3] = ["text", "badge", "tag"];
/// The colours a panel badge or tag may take.
const COLORS: [&str; 5] = ["default", "success", "warning", "error", "info"];
/// How much of a user's input a trace line quotes.
const TRACE_INPUT_CHARS: usize = 60;

/// Why a flow cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FlowError {
    /// The offending field, e.g. `steps[2].buttons[0].title` (step indexes after sorting by
    /// `step_order`).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FlowError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl From<ButtonError> for FlowError {
    fn from(err: ButtonError) -> Self {
        let path = err.field();
        // The button error's text starts with its field; keep only what follows it.
        let text = err.to_string();
        let message = text.strip_prefix(path.as_str()).unwrap_or(&text).trim_start_matches([':', ' ']).to_string();
        Self { path, message }
    }
}

/// Validates and normalizes a flow before it is saved.
///
/// Names, keywords, ids, URLs and panel entries are trimmed; steps are sorted (stably) by
/// `step_order`; missing step ids become `step_{name slug}`, unique within the flow; button
/// ids are generated as for any message ([`buttons::normalize_buttons`]); a `buttons` step
/// without an input type waits for a selection; an `api_fetch` method is uppercased; a blank
/// `store_as` means none. Errors name the first offending field.
pub fn validate(flow: &mut Flow) -> Result<(), FlowError> {
    let name = flow.name.trim();
    if name.is_empty() {
        return Err(FlowError::new("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FlowError::new("name", format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    flow.name = name.to_string();

    for (index, keyword) in flow.trigger_keywords.iter_mut().enumerate() {
        let trimmed = keyword.trim();
        let path = format!("trigger_keywords[{index}]");
        if trimmed.is_empty() {
            return Err(FlowError::new(path, "must not be empty"));
        }
        if event_name(trimmed).is_some_and(str::is_empty) {
            return Err(FlowError::new(path, "an event trigger needs a name, e.g. \"event:order_paid\""));
        }
        *keyword = trimmed.to_string();
    }

    if flow.steps.is_empty() {
        return Err(FlowError::new("steps", "a flow needs at least one step"));
    }
    flow.steps.sort_by_key(|step| step.step_order);
    let mut names = HashSet::new();
    for (index, step) in flow.steps.iter_mut().enumerate() {
        validate_step(index, step)?;
        if !names.insert(step.step_name.clone()) {
            return Err(FlowError::new(
                format!("steps[{index}].step_name"),
                format!("{:?} is used by another step", step.step_name),
            ));
        }
    }
    assign_step_ids(&mut flow.steps)?;

    if let Some(panel) = &mut flow.panel_config {
        validate_panel(panel)?;
    }
    Ok(())
}

fn validate_step(index: usize, step: &mut FlowStep) -> Result<(), FlowError> {
    let at = |field: &str| format!("steps[{index}].{field}");

    step.step_name = step.step_name.trim().to_string();
    if step.step_name.is_empty() {
        return Err(FlowError::new(at("step_name"), "must not be empty"));
    }

    step.store_as = match step.store_as.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) if is_variable_name(name) => Some(name.to_string()),
        Some(_) => return Err(FlowError::new(at("store_as"), variable_name_rule())),
    };

    if step.message_type == StepType::Buttons {
        if step.buttons.is_empty() {
            return Err(FlowError::new(
                at("buttons"),
                format!("a buttons step needs 1 to {} buttons", buttons::MAX_BUTTONS),
            ));
        }
        if step.input_type == InputType::None {
            step.input_type = InputType::Select;
        }
    }
    if !step.buttons.is_empty() {
        step.buttons = buttons::normalize_buttons(&at("buttons"), std::mem::take(&mut step.buttons))?;
    }
    if step.input_type == InputType::Select && step.buttons.is_empty() {
        return Err(FlowError::new(at("buttons"), "input_type select needs buttons to select from"));
    }

    match step.message_type {
        StepType::Text if step.message.trim().is_empty() => {
            Err(FlowError::new(at("message"), "a text step needs a message"))
        }
        StepType::ApiFetch => match &mut step.api_config {
            None => Err(FlowError::new(at("api_config"), "an api_fetch step needs api_config")),
            Some(config) => validate_fetch(&at("api_config"), config),
        },
        StepType::WhatsappFlow => match &mut step.whatsapp_flow {
            None => Err(FlowError::new(at("whatsapp_flow"), "a whatsapp_flow step needs whatsapp_flow.flow_id")),
            Some(config) => {
                config.flow_id = config.flow_id.trim().to_string();
                if config.flow_id.is_empty() {
                    Err(FlowError::new(at("whatsapp_flow.flow_id"), "must not be empty"))
                } else {
                    Ok(())
                }
            }
        },
        // A transfer without transfer_config goes to the general queue.
        StepType::Text | StepType::Buttons | StepType::Transfer => Ok(()),
    }
}

fn validate_fetch(path: &str, config: &mut ApiFetchConfig) -> Result<(), FlowError> {
    config.url = config.url.trim().to_string();
    let after_scheme = ["http://", "https://"].iter().find_map(|scheme| {
        let head = config.url.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme).then(|| &config.url[scheme.len()..])
    });
    if after_scheme.is_none_or(str::is_empty) {
        return Err(FlowError::new(format!("{path}.url"), "must start with http:// or https://"));
    }

    config.method = config.method.trim().to_ascii_uppercase();
    if !FETCH_METHODS.contains(&config.method.as_str()) {
        return Err(FlowError::new(format!("{path}.method"), format!("must be one of {}", FETCH_METHODS.join(", "))));
    }

    if !(1..=MAX_FETCH_TIMEOUT_MS).contains(&config.timeout_ms) {
        return Err(FlowError::new(
            format!("{path}.timeout_ms"),
            format!("must be between 1 and {MAX_FETCH_TIMEOUT_MS}"),
        ));
    }

    for (variable, pointer) in &config.mapping {
        let field = format!("{path}.mapping.{variable}");
        if !is_variable_name(variable) {
            return Err(FlowError::new(field, variable_name_rule()));
        }
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(FlowError::new(field, "must be a JSON pointer such as \"/order/status\""));
        }
    }
    Ok(())
}

/// Keeps given step ids (which must be unique) and generates the missing ones.
fn assign_step_ids(steps: &mut [FlowStep]) -> Result<(), FlowError> {
    let mut used = HashSet::new();
    for (index, step) in steps.iter_mut().enumerate() {
        step.id = step.id.trim().to_string();
        if !step.id.is_empty() && !used.insert(step.id.clone()) {
            return Err(FlowError::new(format!("steps[{index}].id"), format!("{:?} is used by another step", step.id)));
        }
    }
    // Given ids are all reserved first, so a generated id never takes one a later step was given.
    for (index, step) in steps.iter_mut().enumerate() {
        if !step.id.is_empty() {
            continue;
        }
        let slug = slug(&step.step_name);
        let base = if slug.is_empty() { format!("step_{}", index + 1) } else { format!("step_{slug}") };
        let mut id = base.clone();
        let mut suffix = 2;
        while used.contains(&id) {
            id = format!("{base}_{suffix}");
            suffix += 1;
        }
        used.insert(id.clone());
        step.id = id;
    }
    Ok(())
}

fn validate_panel(panel: &mut PanelConfig) -> Result<(), FlowError> {
    let mut ids = HashSet::new();
    for (s, section) in panel.sections.iter_mut().enumerate() {
        let at = |field: &str| format!("panel_config.sections[{s}].{field}");
        section.id = section.id.trim().to_string();
        if section.id.is_empty() {
            return Err(FlowError::new(at("id"), "must not be empty"));
        }
        if !ids.insert(section.id.clone()) {
            return Err(FlowError::new(at("id"), format!("{:?} is used by another section", section.id)));
        }
        section.label = section.label.trim().to_string();
        if section.label.is_empty() {
            return Err(FlowError::new(at("label"), "must not be empty"));
        }
        if !matches!(section.columns, 1 | 2) {
            return Err(FlowError::new(at("columns"), "must be 1 or 2"));
        }
        for (f, field) in section.fields.iter_mut().enumerate() {
            let at = |name: &str| at(&format!("fields[{f}].{name}"));
            field.key = field.key.trim().to_string();
            if field.key.is_empty() {
                return Err(FlowError::new(at("key"), "must not be empty"));
            }
            field.label = field.label.trim().to_string();
            if field.label.is_empty() {
                return Err(FlowError::new(at("label"), "must not be empty"));
            }
            field.display_type = field.display_type.trim().to_string();
            if !DISPLAY_TYPES.contains(&field.display_type.as_str()) {
                return Err(FlowError::new(at("display_type"), format!("must be one of {}", DISPLAY_TYPES.join(", "))));
            }
            if let Some(color) = &mut field.color {
                *color = color.trim().to_string();
                if !COLORS.contains(&color.as_str()) {
                    return Err(FlowError::new(at("color"), format!("must be one of {}", COLORS.join(", "))));
                }
            }
        }
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_VARIABLE_CHARS`] long.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_VARIABLE_CHARS
}

fn variable_name_rule() -> String {
    format!(
        "must be a variable name: a letter or _, then letters, digits or _, at most {MAX_VARIABLE_CHARS} characters"
    )
}

/// Lowercase ASCII letters and digits of `text`, every other run of characters made one `_`,
/// without leading or trailing `_`.
fn slug(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for c in text.chars() {
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

/// The event name of an `event:NAME` trigger entry (prefix matched ignoring case), trimmed;
/// `None` for a keyword entry.
fn event_name(entry: &str) -> Option<&str> {
    let head = entry.get(..EVENT_PREFIX.len())?;
    head.eq_ignore_ascii_case(EVENT_PREFIX).then(|| entry[EVENT_PREFIX.len()..].trim())
}

/// A request the actor must perform for an `api_fetch` step, with `{{variables}}` rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchRequest {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    /// Sent as JSON when set.
    pub body: Option<Value>,
    /// How long the actor waits for the answer before reporting a failure.
    pub timeout: Duration,
}

/// What came back from a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum FetchOutcome {
    /// A JSON answer.
    Json(Value),
    /// No usable answer (timeout, transport error, error status, not JSON), and why.
    Failed(String),
}

/// A hand-over the actor must open.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRequest {
    /// Target team; `None` is the general queue.
    pub team_id: Option<TeamId>,
    /// The step's notes, rendered.
    pub notes: String,
}

/// What a flow waits for at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The user's next message, passed to [`take_input`].
    Input,
    /// The answer to [`Progress::fetch`], passed to [`take_fetch`].
    Fetch,
}

/// Where a running flow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Index into the flow's steps.
    pub step: usize,
    pub waiting: Waiting,
}

/// The result of driving a flow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Replies to send, in order.
    pub replies: Vec<ReplyDraft>,
    /// Where the flow now waits; `None` when the flow ended (completed, transferred or failed).
    pub position: Option<Position>,
    /// Set exactly when `position.waiting == Fetch`: the call to make, then call [`take_fetch`].
    pub fetch: Option<FetchRequest>,
    /// Set when a `transfer` step ended the flow.
    pub transfer: Option<TransferRequest>,
    /// True when the flow ran to its end (completion_message sent).
    pub completed: bool,
    /// Human-readable decisions, for debugging ("started flow X", "re-asking step rating", …);
    /// empty unless the caller asked for them.
    pub trace: Vec<String>,
    /// Whether `trace` is written: callers that discard it (`handle`) format no line.
    explain: bool,
}

impl Progress {
    fn new(explain: bool) -> Self {
        Self { explain, ..Self::default() }
    }

    /// Adds a trace line, formatted only when the trace is kept.
    fn note(&mut self, line: std::fmt::Arguments<'_>) {
        if self.explain {
            self.trace.push(line.to_string());
        }
    }

    fn say(&mut self, reply: Option<ReplyDraft>) {
        self.replies.extend(reply);
    }

    fn wait(&mut self, step: &FlowStep, index: usize, waiting: Waiting) {
        self.position = Some(Position { step: index, waiting });
        let what = match waiting {
            Waiting::Input => "input",
            Waiting::Fetch => "the API answer",
        };
        self.note(format_args!("step {}: waiting for {what}", step.step_name));
    }
}

/// Starts `flow`: sends `initial_message` (rendered, when not blank and `at_step` is `None`),
/// then runs from the first step, or from `at_step` (a flow ends at once when that step does
/// not exist). With `explain`, every decision is also written to the returned `trace`.
pub fn start(flow: &Flow, at_step: Option<usize>, vars: &mut Map<String, Value>, explain: bool) -> Progress {
    let mut progress = Progress::new(explain);
    progress.note(format_args!("started flow {}", flow.name));
    match at_step {
        None => {
            progress.say(text_reply(render(&flow.initial_message, vars), &[]));
            run(flow, 0, vars, &mut progress);
        }
        Some(index) => match flow.steps.get(index) {
            Some(step) => {
                progress.note(format_args!("resuming at step {}", step.step_name));
                run(flow, index, vars, &mut progress);
            }
            None => progress.note(format_args!("step #{index} does not exist; flow ended")),
        },
    }
    progress
}

/// The step at `step`, waiting for input, takes `input`. An answer the step cannot accept
/// re-sends the step's message and keeps waiting; an accepted one is stored under `store_as`
/// and the flow goes on. `explain` as for [`start`].
pub fn take_input(flow: &Flow, step: usize, input: &str, vars: &mut Map<String, Value>, explain: bool) -> Progress {
    let mut progress = Progress::new(explain);
    let Some(current) = flow.steps.get(step) else {
        progress.note(format_args!("step #{step} does not exist; flow ended"));
        return progress;
    };
    let shown = quote(input);
    let name = &current.step_name;
    let accepted = match expected_input(current) {
        InputType::None => {
            progress.note(format_args!("step {name} expects no input; moving on"));
            run(flow, step + 1, vars, &mut progress);
            return progress;
        }
        InputType::Select => match buttons::pick(&current.buttons, input) {
            Some(button) => {
                progress.note(format_args!("input {shown} matched button {}", button.id));
                Some(Value::String(button.id.clone()))
            }
            None => {
                progress.note(format_args!("input {shown} matched no button of step {name}"));
                None
            }
        },
        InputType::Text => {
            let text = input.trim();
            if text.is_empty() {
                progress.note(format_args!("input for step {name} is empty"));
                None
            } else {
                Some(Value::String(text.to_string()))
            }
        }
        InputType::Number => {
            let number = parse_number(input);
            if number.is_none() {
                progress.note(format_args!("input {shown} is not a number"));
            }
            number
        }
        InputType::Email => {
            let text = input.trim();
            if looks_like_email(text) {
                Some(Value::String(text.to_string()))
            } else {
                progress.note(format_args!("input {shown} is not an e-mail address"));
                None
            }
        }
    };
    match accepted {
        Some(value) => {
            if let Some(variable) = current.store_as.as_deref().filter(|v| !v.is_empty()) {
                progress.note(format_args!("stored {variable}"));
                vars.insert(variable.to_string(), value);
            }
            run(flow, step + 1, vars, &mut progress);
        }
        None => {
            progress.note(format_args!("re-asking step {name}"));
            progress.say(step_reply(current, vars));
            progress.wait(current, step, Waiting::Input);
        }
    }
    progress
}

/// The `api_fetch` step at `step` gets its outcome. An answer fills the step's mapped
/// variables (a pointer missing from the answer leaves its variable as it was) and the flow
/// goes on with the step's message; a failure sends `on_error`, or `fallback` (the chatbot's
/// fallback message) when that is blank, and ends the flow. `explain` as for [`start`].
pub fn take_fetch(
    flow: &Flow,
    step: usize,
    outcome: FetchOutcome,
    vars: &mut Map<String, Value>,
    fallback: &str,
    explain: bool,
) -> Progress {
    let mut progress = Progress::new(explain);
    let Some(current) = flow.steps.get(step) else {
        progress.note(format_args!("step #{step} does not exist; flow ended"));
        return progress;
    };
    let name = &current.step_name;
    match outcome {
        FetchOutcome::Json(answer) => {
            progress.note(format_args!("step {name}: API answered"));
            for (variable, pointer) in current.api_config.iter().flat_map(|config| &config.mapping) {
                match answer.pointer(pointer) {
                    Some(value) => {
                        vars.insert(variable.clone(), value.clone());
                        progress.note(format_args!("mapped {variable} from {pointer:?}"));
                    }
                    None => progress.note(format_args!("{pointer:?} is not in the answer; {variable} left as it was")),
                }
            }
            if send_and_continue(current, step, vars, &mut progress) {
                run(flow, step + 1, vars, &mut progress);
            }
        }
        FetchOutcome::Failed(reason) => {
            progress.note(format_args!("step {name}: API call failed: {reason}"));
            let on_error = current.api_config.as_ref().map_or("", |config| config.on_error.as_str());
            let message = if on_error.trim().is_empty() { fallback } else { on_error };
            progress.say(text_reply(render(message, vars), &[]));
            progress.note(format_args!("flow {} ended after a failed API call", flow.name));
        }
    }
    progress
}

/// The index of the step named `name_or_id` (its `step_name`, else its `id`), if the (possibly
/// edited) flow still has it.
pub fn find_step(flow: &Flow, name_or_id: &str) -> Option<usize> {
    if name_or_id.is_empty() {
        return None;
    }
    let steps = &flow.steps;
    steps.iter().position(|s| s.step_name == name_or_id).or_else(|| steps.iter().position(|s| s.id == name_or_id))
}

/// The first enabled flow (in the order given) whose keyword triggers (not `event:` entries)
/// occur in `normalized` (the output of [`super::rules::normalize`]) as whole words or phrases.
pub fn triggered_by<'a>(flows: &'a [Flow], normalized: &str) -> Option<&'a Flow> {
    if normalized.is_empty() {
        return None;
    }
    flows.iter().filter(|flow| flow.enabled).find(|flow| {
        let keywords: Vec<String> = flow
            .trigger_keywords
            .iter()
            .filter(|k| !k.trim().is_empty() && event_name(k.trim()).is_none())
            .cloned()
            .collect();
        // An empty list is refused by the matcher: such a flow starts by events only.
        KeywordMatcher::new(MatchType::Contains, &keywords).is_ok_and(|matcher| matcher.matches(normalized))
    })
}

/// The first enabled flow (in the order given) whose trigger list has `event:NAME` for `event`,
/// comparing names ignoring case.
pub fn triggered_by_event<'a>(flows: &'a [Flow], event: &str) -> Option<&'a Flow> {
    let event = event.trim().to_lowercase();
    if event.is_empty() {
        return None;
    }
    flows.iter().filter(|flow| flow.enabled).find(|flow| {
        flow.trigger_keywords.iter().filter_map(|k| event_name(k.trim())).any(|name| name.to_lowercase() == event)
    })
}

/// Runs steps from `from` until one waits or the flow ends.
fn run(flow: &Flow, from: usize, vars: &mut Map<String, Value>, progress: &mut Progress) {
    // Steps only move forward, so this bound is never reached; it guards the loop anyway.
    for index in (from..).take(flow.steps.len() + 1) {
        let Some(step) = flow.steps.get(index) else {
            progress.say(text_reply(render(&flow.completion_message, vars), &[]));
            progress.completed = true;
            progress.note(format_args!("flow {} completed", flow.name));
            return;
        };
        if !execute(step, index, vars, progress) {
            return;
        }
    }
    progress.note(format_args!("flow {} stopped after {} steps", flow.name, flow.steps.len() + 1));
}

/// Runs one step; true when the flow goes on to the next step.
fn execute(step: &FlowStep, index: usize, vars: &mut Map<String, Value>, progress: &mut Progress) -> bool {
    match step.message_type {
        StepType::Transfer => {
            progress.say(text_reply(render(&step.message, vars), &[]));
            let config = step.transfer_config.as_ref();
            let team_id = config.and_then(|c| c.team_id);
            let notes = config.map(|c| render(&c.notes, vars)).unwrap_or_default();
            match team_id {
                Some(team) => {
                    progress.note(format_args!("step {}: transfer to team {team}; flow ended", step.step_name))
                }
                None => {
                    progress.note(format_args!("step {}: transfer to the general queue; flow ended", step.step_name))
                }
            }
            progress.transfer = Some(TransferRequest { team_id, notes });
            false
        }
        StepType::ApiFetch => match &step.api_config {
            Some(config) => {
                let request = fetch_request(config, vars);
                progress.note(format_args!("step {}: calling {} {}", step.step_name, request.method, request.url));
                progress.fetch = Some(request);
                progress.wait(step, index, Waiting::Fetch);
                false
            }
            None => {
                // Validation refuses this; without a call to make, the step is a plain message.
                progress.note(format_args!("step {} has no api_config; no call made", step.step_name));
                send_and_continue(step, index, vars, progress)
            }
        },
        StepType::Text | StepType::Buttons | StepType::WhatsappFlow => send_and_continue(step, index, vars, progress),
    }
}

/// Sends the step's message, then either waits for input at it (false) or lets the flow go on
/// (true).
fn send_and_continue(step: &FlowStep, index: usize, vars: &Map<String, Value>, progress: &mut Progress) -> bool {
    progress.say(step_reply(step, vars));
    if expected_input(step) == InputType::None {
        true
    } else {
        progress.wait(step, index, Waiting::Input);
        false
    }
}

/// What a step waits for once its message is sent.
fn expected_input(step: &FlowStep) -> InputType {
    match (step.message_type, step.input_type) {
        (StepType::Transfer, _) => InputType::None,
        (StepType::Buttons, InputType::None) => InputType::Select,
        (_, input) => input,
    }
}

/// The message a (non-transfer) step sends, and sends again when it re-asks: with the step's
/// buttons when it offers a choice, as a native flow for `whatsapp_flow` steps.
fn step_reply(step: &FlowStep, vars: &Map<String, Value>) -> Option<ReplyDraft> {
    let text = render(&step.message, vars);
    if let (StepType::WhatsappFlow, Some(config)) = (step.message_type, &step.whatsapp_flow) {
        return Some(ReplyDraft {
            text,
            buttons: Vec::new(),
            whatsapp_flow: Some(WhatsappFlowRef {
                flow_id: config.flow_id.clone(),
                parameters: render_json(&config.parameters, vars),
            }),
        });
    }
    let offers_choice = step.message_type == StepType::Buttons || expected_input(step) == InputType::Select;
    text_reply(text, if offers_choice { &step.buttons } else { &[] })
}

/// A reply, unless there is nothing to send.
fn text_reply(text: String, buttons: &[Button]) -> Option<ReplyDraft> {
    (!text.trim().is_empty() || !buttons.is_empty()).then(|| ReplyDraft::new(&text, buttons))
}

fn fetch_request(config: &ApiFetchConfig, vars: &Map<String, Value>) -> FetchRequest {
    FetchRequest {
        url: render_url(config.url.trim(), vars),
        method: config.method.trim().to_ascii_uppercase(),
        headers: config.headers.iter().map(|(name, value)| (name.clone(), render(value, vars))).collect(),
        body: config.body.as_ref().map(|body| render_json(body, vars)),
        // Clamped so that even an unvalidated flow cannot make the actor wait long.
        timeout: Duration::from_millis(config.timeout_ms.clamp(1, MAX_FETCH_TIMEOUT_MS)),
    }
}

/// A number answer as JSON: integers stay integers (so `{{age}}` renders `42`, not `42.0`).
fn parse_number(input: &str) -> Option<Value> {
    let text = input.trim();
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Value::from(integer));
    }
    let float = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    serde_json::Number::from_f64(float).map(Value::Number)
}

/// `x@y.z`: one `@`, something before it, a dotted domain without empty labels, no whitespace.
fn looks_like_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !text.chars().any(char::is_whitespace)
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// A user's input as a trace line quotes it: in quotes, cut after [`TRACE_INPUT_CHARS`].
fn quote(input: &str) -> Quoted<'_> {
    Quoted(input)
}

/// See [`quote`]; formats only when a trace line is written.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut chars = self.0.chars();
        f.write_str("'")?;
        for c in chars.by_ref().take(TRACE_INPUT_CHARS) {
            std::fmt::Write::write_char(f, c)?;
        }
        f.write_str(if chars.next().is_some() { "…'" } else { "'" })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::model::{ChatbotId, FlowId, PanelField, PanelSection, TransferConfig, WhatsappFlowConfig};

    /// The seed's "Feedback Collection" flow as written, except that its placeholder
    /// `"team_id": "uuid"` needs a real UUID to parse.
    const FEEDBACK_FLOW: &str = r#"{ "name": "Feedback Collection", "trigger_keywords": ["feedback", "review"], "initial_message": "Hi! I'd like to collect your feedback.", "completion_message": "Thank you for your feedback!", "enabled": true, "panel_config": { "sections": [ { "id": "customer", "label": "Customer Info", "columns": 1, "collapsible": true, "default_collapsed": false, "order": 1, "fields": [ {"key": "rating", "label": "Rating", "order": 1}, {"key": "comment", "label": "Comment", "order": 2} ] } ] }, "steps": [ { "step_name": "rating", "step_order": 1, "message": "How would you rate your experience?", "message_type": "buttons", "input_type": "select", "buttons": [ {"id": "excellent", "title": "Excellent"}, {"id": "good", "title": "Good"}, {"id": "poor", "title": "Poor"} ], "store_as": "rating" }, { "step_name": "comment", "step_order": 2, "message": "Any additional comments?", "message_type": "text", "input_type": "text", "store_as": "comment" }, { "step_name": "transfer", "step_order": 3, "message": "Connecting you with our team...", "message_type": "transfer", "transfer_config": { "team_id": "uuid", "notes": "Rating: {{rating}}" } } ]}"#;
    const TEAM: &str = "7b0c2a7e-3d1f-4e55-9a3c-1f2e3d4c5b6a";

    fn epoch() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    /// A stored flow from its JSON request body.
    fn flow_from_json(body: &str) -> Flow {
        let mut value: Value = serde_json::from_str(body).expect("seed JSON parses");
        let fields = value.as_object_mut().unwrap();
        fields.insert("id".into(), json!(FlowId(Uuid::from_u128(1))));
        fields.insert("chatbot_id".into(), json!(ChatbotId(Uuid::from_u128(2))));
        fields.insert("created_at".into(), json!(epoch()));
        fields.insert("updated_at".into(), json!(epoch()));
        serde_json::from_value(value).expect("flow fields parse")
    }

    fn feedback_flow() -> Flow {
        let mut flow =
            flow_from_json(&FEEDBACK_FLOW.replace(r#""team_id": "uuid""#, &format!(r#""team_id": "{TEAM}""#)));
        validate(&mut flow).expect("the seed flow is valid");
        flow
    }

    fn flow(steps: Vec<FlowStep>) -> Flow {
        Flow {
            id: FlowId(Uuid::from_u128(1)),
            chatbot_id: ChatbotId(Uuid::from_u128(2)),
            name: "Test".into(),
            trigger_keywords: vec!["test".into()],
            initial_message: String::new(),
            completion_message: "Done, {{name}}.".into(),
            enabled: true,
            panel_config: None,
            steps,
            created_at: epoch(),
            updated_at: epoch(),
        }
    }

    fn step(name: &str, message_type: StepType, message: &str) -> FlowStep {
        FlowStep {
            id: String::new(),
            step_name: name.into(),
            step_order: 0,
            message: message.into(),
            message_type,
            input_type: InputType::None,
            buttons: Vec::new(),
            store_as: None,
            transfer_config: None,
            api_config: None,
            whatsapp_flow: None,
        }
    }

    fn asking(name: &str, input_type: InputType, store_as: &str) -> FlowStep {
        FlowStep {
            input_type,
            store_as: Some(store_as.into()),
            ..step(name, StepType::Text, &format!("Your {store_as}?"))
        }
    }

    fn button(id: &str, title: &str) -> Button {
        Button { id: id.into(), title: title.into() }
    }

    fn fetch_step(on_error: &str) -> FlowStep {
        FlowStep {
            api_config: Some(ApiFetchConfig {
                url: "https://api.example.com/orders/{{order_id}}".into(),
                method: "get".into(),
                headers: BTreeMap::from([("Authorization".into(), "Bearer {{token}}".into())]),
                body: Some(json!({"order": "{{order_id}}", "n": 1})),
                mapping: BTreeMap::from([
                    ("status".into(), "/order/status".into()),
                    ("eta".into(), "/order/eta".into()),
                    ("everything".into(), String::new()),
                ]),
                timeout_ms: 2500,
                on_error: on_error.into(),
            }),
            ..step("lookup", StepType::ApiFetch, "Your order is {{status}}.")
        }
    }

    fn texts(progress: &Progress) -> Vec<&str> {
        progress.replies.iter().map(|r| r.text.as_str()).collect()
    }

    fn waiting_at(step: usize) -> Option<Position> {
        Some(Position { step, waiting: Waiting::Input })
    }

    #[test]
    fn the_seed_feedback_flow_runs_to_its_transfer() {
        let flow = feedback_flow();
        let mut vars = Map::new();

        let started = start(&flow, None, &mut vars, true);
        assert_eq!(texts(&started), ["Hi! I'd like to collect your feedback.", "How would you rate your experience?"]);
        assert_eq!(started.replies[1].buttons.len(), 3);
        assert_eq!(started.position, waiting_at(0));
        assert!(started.trace.contains(&"started flow Feedback Collection".to_string()));

        let nope = take_input(&flow, 0, "nope", &mut vars, true);
        assert_eq!(nope.replies, started.replies[1..], "the rating is asked again, buttons and all");
        assert_eq!(nope.position, waiting_at(0));
        assert!(nope.trace.contains(&"re-asking step rating".to_string()));
        assert!(vars.is_empty());

        let good = take_input(&flow, 0, "GOOD", &mut vars, true);
        assert_eq!(vars["rating"], json!("good"));
        assert_eq!(texts(&good), ["Any additional comments?"]);
        assert!(good.replies[0].buttons.is_empty());
        assert_eq!(good.position, waiting_at(1));

        let comment = take_input(&flow, 1, "  great service ", &mut vars, true);
        assert_eq!(vars["comment"], json!("great service"));
        assert_eq!(texts(&comment), ["Connecting you with our team..."], "no completion message after a transfer");
        assert_eq!(
            comment.transfer,
            Some(TransferRequest { team_id: Some(TEAM.parse().unwrap()), notes: "Rating: good".into() })
        );
        assert_eq!(comment.position, None);
        assert!(!comment.completed);
    }

    #[test]
    fn the_seed_flow_is_normalized_when_validated() {
        let flow = feedback_flow();
        let ids: Vec<&str> = flow.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["step_rating", "step_comment", "step_transfer"]);
        assert_eq!(flow.panel_config.unwrap().sections[0].fields[0].display_type, "text");
    }

    #[test]
    fn a_flow_that_runs_to_its_end_sends_the_completion_message() {
        let flow = flow(vec![
            asking("name", InputType::Text, "name"),
            step("greet", StepType::Text, "Nice to meet you, {{name}}!"),
        ]);
        let mut vars = Map::new();
        let started = start(&flow, None, &mut vars, true);
        assert_eq!(texts(&started), ["Your name?"]);

        let done = take_input(&flow, 0, "Ada", &mut vars, true);
        assert_eq!(texts(&done), ["Nice to meet you, Ada!", "Done, Ada."]);
        assert!(done.completed);
        assert_eq!(done.position, None);
        assert_eq!(done.transfer, None);
    }

    #[test]
    fn a_transfer_without_config_goes_to_the_general_queue() {
        let mut flow = flow(vec![step("handoff", StepType::Transfer, "")]);
        validate(&mut flow).unwrap();
        let progress = start(&flow, None, &mut Map::new(), true);
        assert!(progress.replies.is_empty());
        assert_eq!(progress.transfer, Some(TransferRequest { team_id: None, notes: String::new() }));
    }

    #[test]
    fn an_api_answer_fills_mapped_variables_and_the_flow_goes_on() {
        let mut flow = flow(vec![fetch_step("")]);
        flow.initial_message = "Let me check.".into();
        validate(&mut flow).unwrap();
        let mut vars = Map::from_iter([("order_id".to_string(), json!("42")), ("token".to_string(), json!("t0k"))]);

        let started = start(&flow, None, &mut vars, true);
        assert_eq!(texts(&started), ["Let me check."]);
        assert_eq!(started.position, Some(Position { step: 0, waiting: Waiting::Fetch }));
        assert_eq!(
            started.fetch,
            Some(FetchRequest {
                url: "https://api.example.com/orders/42".into(),
                method: "GET".into(),
                headers: BTreeMap::from([("Authorization".into(), "Bearer t0k".into())]),
                body: Some(json!({"order": "42", "n": 1})),
                timeout: Duration::from_millis(2500),
            })
        );

        let answer = json!({"order": {"status": "shipped"}});
        let done = take_fetch(&flow, 0, FetchOutcome::Json(answer.clone()), &mut vars, "fallback", true);
        assert_eq!(vars["status"], json!("shipped"));
        assert!(!vars.contains_key("eta"), "a missing pointer leaves the variable unset");
        assert_eq!(vars["everything"], answer);
        assert_eq!(texts(&done), ["Your order is shipped.", "Done, ."]);
        assert!(done.completed);
        assert_eq!(done.fetch, None);
    }

    #[test]
    fn an_api_step_may_wait_for_input_after_its_answer() {
        let mut fetch = fetch_step("");
        fetch.input_type = InputType::Text;
        fetch.store_as = Some("reply".into());
        let flow = flow(vec![fetch]);
        let mut vars = Map::new();
        let done = take_fetch(&flow, 0, FetchOutcome::Json(json!({"order": {"status": "late"}})), &mut vars, "", true);
        assert_eq!(texts(&done), ["Your order is late."]);
        assert_eq!(done.position, waiting_at(0));
    }

    #[test]
    fn a_failed_api_call_sends_on_error_and_ends_the_flow() {
        let flow =
            flow(vec![fetch_step("Sorry, order {{order_id}} cannot be found."), step("next", StepType::Text, "x")]);
        let mut vars = Map::from_iter([("order_id".to_string(), json!(7))]);
        let failed = take_fetch(&flow, 0, FetchOutcome::Failed("timeout".into()), &mut vars, "fallback", true);
        assert_eq!(texts(&failed), ["Sorry, order 7 cannot be found."]);
        assert_eq!(failed.position, None);
        assert!(!failed.completed);
        assert!(failed.trace.iter().any(|t| t.contains("timeout")));
    }

    #[test]
    fn a_failed_api_call_without_on_error_sends_the_fallback() {
        let flow = flow(vec![fetch_step("  ")]);
        let failed =
            take_fetch(&flow, 0, FetchOutcome::Failed("502".into()), &mut Map::new(), "Sorry, try later.", true);
        assert_eq!(texts(&failed), ["Sorry, try later."]);
        assert_eq!(failed.position, None);
        assert!(!failed.completed);
    }

    #[test]
    fn a_whatsapp_flow_step_replies_with_the_native_flow() {
        let flow = flow(vec![FlowStep {
            input_type: InputType::Text,
            store_as: Some("form".into()),
            whatsapp_flow: Some(WhatsappFlowConfig {
                flow_id: "123456".into(),
                parameters: json!({"greeting": "Hi {{name}}", "screen": "WELCOME"}),
            }),
            ..step("form", StepType::WhatsappFlow, "Please fill in the form, {{name}}")
        }]);
        let mut vars = Map::from_iter([("name".to_string(), json!("Ada"))]);
        let progress = start(&flow, None, &mut vars, true);
        assert_eq!(
            progress.replies,
            [ReplyDraft {
                text: "Please fill in the form, Ada".into(),
                buttons: Vec::new(),
                whatsapp_flow: Some(WhatsappFlowRef {
                    flow_id: "123456".into(),
                    parameters: json!({"greeting": "Hi Ada", "screen": "WELCOME"}),
                }),
            }]
        );
        assert_eq!(progress.position, waiting_at(0));
    }

    #[test]
    fn a_number_step_re_asks_until_it_gets_a_number() {
        let flow = flow(vec![asking("age", InputType::Number, "age")]);
        let mut vars = Map::new();
        for bad in ["abc", "", "NaN", "inf", "1e999", "12 years"] {
            let again = take_input(&flow, 0, bad, &mut vars, true);
            assert_eq!(texts(&again), ["Your age?"], "{bad:?}");
            assert_eq!(again.position, waiting_at(0));
        }
        assert!(vars.is_empty());
        take_input(&flow, 0, " 42 ", &mut vars, true);
        assert_eq!(vars["age"], json!(42));
        take_input(&flow, 0, "3.5", &mut vars, true);
        assert_eq!(vars["age"], json!(3.5));
    }

    #[test]
    fn an_email_step_re_asks_until_it_gets_an_address() {
        let flow = flow(vec![asking("email", InputType::Email, "email")]);
        let mut vars = Map::new();
        for bad in ["ada", "ada@example", "@example.com", "ada@@example.com", "a da@example.com", "ada@example..com"] {
            assert_eq!(take_input(&flow, 0, bad, &mut vars, true).position, waiting_at(0), "{bad:?}");
        }
        let done = take_input(&flow, 0, " ada@example.com ", &mut vars, true);
        assert_eq!(vars["email"], json!("ada@example.com"));
        assert!(done.completed);
    }

    #[test]
    fn an_empty_text_answer_is_asked_again() {
        let flow = flow(vec![asking("name", InputType::Text, "name")]);
        assert_eq!(take_input(&flow, 0, "   ", &mut Map::new(), true).position, waiting_at(0));
    }

    #[test]
    fn text_steps_without_input_run_straight_through() {
        let flow = flow(vec![step("a", StepType::Text, "one"), step("b", StepType::Text, "two")]);
        let progress = start(&flow, None, &mut Map::new(), true);
        assert_eq!(texts(&progress), ["one", "two", "Done, ."]);
        assert!(progress.completed);
    }

    #[test]
    fn starting_at_a_step_skips_the_initial_message() {
        let mut flow = feedback_flow();
        flow.initial_message = "Hello".into();
        let progress = start(&flow, Some(1), &mut Map::new(), true);
        assert_eq!(texts(&progress), ["Any additional comments?"]);
        assert_eq!(progress.position, waiting_at(1));
        assert_eq!(start(&flow, Some(9), &mut Map::new(), true).position, None);
    }

    #[test]
    fn a_step_that_no_longer_exists_ends_the_flow() {
        let flow = feedback_flow();
        let progress = take_input(&flow, 3, "good", &mut Map::new(), true);
        assert_eq!(progress, Progress { trace: progress.trace.clone(), ..Progress::new(true) });
        let progress = take_fetch(&flow, 99, FetchOutcome::Json(json!({})), &mut Map::new(), "x", true);
        assert_eq!(progress.position, None);
        assert!(progress.replies.is_empty());
    }

    #[test]
    fn find_step_looks_up_names_then_ids() {
        let flow = feedback_flow();
        assert_eq!(find_step(&flow, "comment"), Some(1));
        assert_eq!(find_step(&flow, "step_transfer"), Some(2));
        assert_eq!(find_step(&flow, "Comment"), None);
        assert_eq!(find_step(&flow, ""), None);
    }

    #[test]
    fn flows_are_triggered_by_whole_words() {
        let mut disabled = feedback_flow();
        disabled.enabled = false;
        disabled.name = "Disabled".into();
        let mut events = feedback_flow();
        events.name = "Events".into();
        events.trigger_keywords = vec!["event:Order_Paid".into(), "leave a review".into()];
        let flows = [disabled, feedback_flow(), events];

        let name = |text: &str| triggered_by(&flows, &crate::engine::rules::normalize(text)).map(|f| f.name.as_str());
        assert_eq!(name("I have some FEEDBACK!"), Some("Feedback Collection"));
        assert_eq!(name("feedbacks"), None);
        assert_eq!(name("event:order_paid"), None, "event entries are not keywords");
        assert_eq!(name(""), None);

        assert_eq!(triggered_by_event(&flows, "ORDER_PAID").map(|f| f.name.as_str()), Some("Events"));
        assert_eq!(triggered_by_event(&flows, "order"), None);
        assert_eq!(triggered_by_event(&flows, ""), None);
    }

    fn expect_error(mut flow: Flow) -> FlowError {
        validate(&mut flow).expect_err("the flow must be refused")
    }

    #[test]
    fn validate_refuses_duplicate_step_names() {
        let err = expect_error(flow(vec![step("ask", StepType::Text, "a"), step("ask", StepType::Text, "b")]));
        assert_eq!(err.path, "steps[1].step_name");
        assert_eq!(err.to_string(), "steps[1].step_name: \"ask\" is used by another step");
    }

    #[test]
    fn validate_refuses_eleven_buttons_and_bad_titles() {
        let buttons = |n: usize| (0..n).map(|i| button("", &format!("Option {i}"))).collect::<Vec<_>>();
        let eleven = FlowStep { buttons: buttons(11), ..step("pick", StepType::Buttons, "Pick one") };
        let err = expect_error(flow(vec![step("hi", StepType::Text, "hi"), eleven]));
        assert_eq!(err.path, "steps[1].buttons");
        assert_eq!(err.message, "at most 10 buttons are allowed, got 11");

        let none = FlowStep { buttons: Vec::new(), ..step("pick", StepType::Buttons, "Pick one") };
        assert_eq!(expect_error(flow(vec![none])).path, "steps[0].buttons");

        let blank =
            FlowStep { buttons: vec![button("", "ok"), button("", " ")], ..step("pick", StepType::Buttons, "?") };
        let err = expect_error(flow(vec![blank]));
        assert_eq!(err.to_string(), "steps[0].buttons[1].title: must not be empty");
    }

    #[test]
    fn validate_refuses_a_select_without_buttons() {
        let err =
            expect_error(flow(vec![FlowStep { input_type: InputType::Select, ..step("s", StepType::Text, "?") }]));
        assert_eq!(err.path, "steps[0].buttons");
    }

    #[test]
    fn validate_refuses_bad_panel_columns() {
        let mut flow = feedback_flow();
        flow.panel_config.as_mut().unwrap().sections[0].columns = 3;
        let err = expect_error(flow);
        assert_eq!(err.path, "panel_config.sections[0].columns");
    }

    #[test]
    fn validate_checks_panel_fields() {
        let section = |fields: Vec<PanelField>| PanelSection {
            id: "s".into(),
            label: "S".into(),
            columns: 2,
            collapsible: false,
            default_collapsed: false,
            order: 0,
            fields,
        };
        let field = |display_type: &str, color: Option<&str>| PanelField {
            key: "status".into(),
            label: "Status".into(),
            order: 0,
            display_type: display_type.into(),
            color: color.map(str::to_string),
        };
        let with_panel = |sections: Vec<PanelSection>| Flow {
            panel_config: Some(PanelConfig { sections }),
            ..flow(vec![step("a", StepType::Text, "a")])
        };

        let mut ok = with_panel(vec![section(vec![field("badge", Some("success")), field("tag", None)])]);
        validate(&mut ok).unwrap();
        let cases = [
            (with_panel(vec![section(vec![field("bold", None)])]), "panel_config.sections[0].fields[0].display_type"),
            (with_panel(vec![section(vec![field("badge", Some("pink"))])]), "panel_config.sections[0].fields[0].color"),
            (with_panel(vec![section(vec![]), section(vec![])]), "panel_config.sections[1].id"),
            (with_panel(vec![PanelSection { label: " ".into(), ..section(vec![]) }]), "panel_config.sections[0].label"),
            (
                with_panel(vec![section(vec![PanelField { key: "".into(), ..field("text", None) }])]),
                "panel_config.sections[0].fields[0].key",
            ),
        ];
        for (flow, path) in cases {
            assert_eq!(expect_error(flow).path, path);
        }
    }

    #[test]
    fn validate_checks_api_fetch_steps() {
        let with = |edit: fn(&mut ApiFetchConfig)| {
            let mut step = fetch_step("");
            edit(step.api_config.as_mut().unwrap());
            flow(vec![step])
        };
        let err = expect_error(with(|c| {
            c.mapping.insert("status".into(), "order.status".into());
        }));
        assert_eq!(err.path, "steps[0].api_config.mapping.status");
        assert_eq!(expect_error(with(|c| c.url = "ftp://x".into())).path, "steps[0].api_config.url");
        assert_eq!(expect_error(with(|c| c.url = "https://".into())).path, "steps[0].api_config.url");
        assert_eq!(expect_error(with(|c| c.method = "FETCH".into())).path, "steps[0].api_config.method");
        assert_eq!(expect_error(with(|c| c.timeout_ms = 0)).path, "steps[0].api_config.timeout_ms");
        assert_eq!(expect_error(with(|c| c.timeout_ms = 30_001)).path, "steps[0].api_config.timeout_ms");
        let err = expect_error(with(|c| {
            c.mapping.insert("9lives".into(), "/x".into());
        }));
        assert_eq!(err.path, "steps[0].api_config.mapping.9lives");
        assert_eq!(expect_error(flow(vec![step("f", StepType::ApiFetch, "")])).path, "steps[0].api_config");

        let mut ok = with(|c| c.url = "HTTPS://{{host}}/x".into());
        validate(&mut ok).unwrap();
        assert_eq!(ok.steps[0].api_config.as_ref().unwrap().method, "GET");
    }

    #[test]
    fn validate_refuses_an_event_trigger_without_a_name() {
        let mut bad = flow(vec![step("a", StepType::Text, "a")]);
        bad.trigger_keywords = vec!["hello".into(), " event:  ".into()];
        assert_eq!(expect_error(bad.clone()).path, "trigger_keywords[1]");
        bad.trigger_keywords = vec!["hello".into(), "  ".into()];
        assert_eq!(expect_error(bad).path, "trigger_keywords[1]");
    }

    #[test]
    fn validate_checks_names_steps_and_step_types() {
        let mut unnamed = flow(vec![step("a", StepType::Text, "a")]);
        unnamed.name = "  ".into();
        assert_eq!(expect_error(unnamed.clone()).path, "name");
        unnamed.name = "x".repeat(201);
        assert_eq!(expect_error(unnamed).path, "name");
        assert_eq!(expect_error(flow(vec![])).path, "steps");
        assert_eq!(expect_error(flow(vec![step(" ", StepType::Text, "a")])).path, "steps[0].step_name");
        assert_eq!(expect_error(flow(vec![step("a", StepType::Text, " ")])).path, "steps[0].message");
        assert_eq!(expect_error(flow(vec![step("w", StepType::WhatsappFlow, "")])).path, "steps[0].whatsapp_flow");
        let blank_flow_id = FlowStep {
            whatsapp_flow: Some(WhatsappFlowConfig { flow_id: " ".into(), parameters: Value::Null }),
            ..step("w", StepType::WhatsappFlow, "")
        };
        assert_eq!(expect_error(flow(vec![blank_flow_id])).path, "steps[0].whatsapp_flow.flow_id");
        for bad in ["1st", "has space", "ü", &"v".repeat(65)] {
            let store = FlowStep { store_as: Some(bad.into()), ..asking("a", InputType::Text, "x") };
            assert_eq!(expect_error(flow(vec![store])).path, "steps[0].store_as", "{bad:?}");
        }
    }

    #[test]
    fn validate_sorts_steps_and_assigns_unique_ids() {
        let mut flow = flow(vec![
            FlowStep { step_order: 3, ..step("Last one", StepType::Text, "c") },
            FlowStep { step_order: 1, id: " step_last_one ".into(), ..step("First", StepType::Text, "a") },
            FlowStep { step_order: 1, ..step("???", StepType::Text, "b") },
            FlowStep { step_order: 2, store_as: Some(" ".into()), ..step("Pick", StepType::Buttons, "?") },
        ]);
        flow.steps[3].buttons = vec![button("", "Yes"), button("", "No")];
        validate(&mut flow).unwrap();
        let names: Vec<&str> = flow.steps.iter().map(|s| s.step_name.as_str()).collect();
        assert_eq!(names, ["First", "???", "Pick", "Last one"]);
        let ids: Vec<&str> = flow.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["step_last_one", "step_2", "step_pick", "step_last_one_2"]);
        assert_eq!(flow.steps[2].input_type, InputType::Select);
        assert_eq!(flow.steps[2].store_as, None);
        assert_eq!(flow.steps[2].buttons[1].id, "no");

        let mut twice = flow.clone();
        twice.steps[1].id = "step_pick".into();
        assert_eq!(expect_error(twice).path, "steps[2].id");
    }

    #[test]
    fn a_flow_driven_without_a_trace_answers_the_same_and_writes_no_line() {
        let flow = feedback_flow();
        let drive = |explain| {
            let mut vars = Map::new();
            let started = start(&flow, None, &mut vars, explain);
            let nope = take_input(&flow, 0, "nope", &mut vars, explain);
            let good = take_input(&flow, 0, "GOOD", &mut vars, explain);
            (vec![started, nope, good], vars)
        };
        let (explained, explained_vars) = drive(true);
        let (quiet, quiet_vars) = drive(false);
        assert!(explained.iter().all(|p| !p.trace.is_empty()), "every step explains itself: {explained:?}");
        assert!(quiet.iter().all(|p| p.trace.is_empty()), "{quiet:?}");
        for (explained, quiet) in explained.iter().zip(&quiet) {
            assert_eq!((&explained.replies, &explained.position), (&quiet.replies, &quiet.position));
            assert_eq!((&explained.transfer, explained.completed), (&quiet.transfer, quiet.completed));
        }
        assert_eq!(explained_vars, quiet_vars);
    }

    #[test]
    fn trace_quotes_long_input_shortly() {
        assert_eq!(quote("hi").to_string(), "'hi'");
        assert_eq!(quote(&"x".repeat(100)).to_string(), format!("'{}…'", "x".repeat(TRACE_INPUT_CHARS)));
    }

    fn step_strategy() -> impl Strategy<Value = FlowStep> {
        let message_type = prop_oneof![
            Just(StepType::Text),
            Just(StepType::Buttons),
            Just(StepType::ApiFetch),
            Just(StepType::WhatsappFlow),
            Just(StepType::Transfer),
        ];
        let input_type = prop_oneof![
            Just(InputType::None),
            Just(InputType::Text),
            Just(InputType::Select),
            Just(InputType::Number),
            Just(InputType::Email),
        ];
        let buttons = prop::collection::vec(("[a-c]{0,2}", "[A-Ca-c ]{0,4}"), 0..4)
            .prop_map(|pairs| pairs.into_iter().map(|(id, title)| Button { id, title }).collect::<Vec<_>>());
        let api = prop::option::of(("(https://x/)?\\{\\{[a-c]\\}\\}", "[a-z]{0,4}", 0u64..40_000)).prop_map(|config| {
            config.map(|(url, on_error, timeout_ms)| ApiFetchConfig {
                url,
                method: "GET".into(),
                headers: BTreeMap::new(),
                body: None,
                mapping: BTreeMap::from([("a".into(), "/a".into()), ("b".into(), "".into())]),
                timeout_ms,
                on_error,
            })
        });
        let whatsapp = prop::option::of("[0-9]{0,3}")
            .prop_map(|id| id.map(|flow_id| WhatsappFlowConfig { flow_id, parameters: json!({"p": "{{a}}"}) }));
        let transfer = prop::option::of("[a-z{} ]{0,8}")
            .prop_map(|notes| notes.map(|notes| TransferConfig { team_id: None, notes }));
        (
            ("[a-d]{0,2}", "[a-d]{0,2}", -2i32..3, "[a-z{} ]{0,10}"),
            (message_type, input_type, buttons, prop::option::of("[a-c]{1,2}")),
            (api, whatsapp, transfer),
        )
            .prop_map(
                |(
                    (id, step_name, step_order, message),
                    (message_type, input_type, buttons, store_as),
                    (api_config, whatsapp_flow, transfer_config),
                )| FlowStep {
                    id,
                    step_name,
                    step_order,
                    message,
                    message_type,
                    input_type,
                    buttons,
                    store_as,
                    transfer_config,
                    api_config,
                    whatsapp_flow,
                },
            )
    }

    fn flow_strategy() -> impl Strategy<Value = Flow> {
        prop::collection::vec(step_strategy(), 0..7).prop_map(flow)
    }

    /// Random flows patched into ones that pass validation (most random flows do not).
    fn valid_flow_strategy() -> impl Strategy<Value = Flow> {
        prop::collection::vec(step_strategy(), 1..7).prop_map(|steps| {
            let steps = steps.into_iter().enumerate().map(|(i, step)| make_valid(i, step)).collect();
            flow(steps)
        })
    }

    fn make_valid(index: usize, mut step: FlowStep) -> FlowStep {
        step.step_name = format!("s{index}{}", step.step_name);
        step.id = String::new();
        if step.message.trim().is_empty() {
            step.message = "say {{a}}".into();
        }
        for (j, button) in step.buttons.iter_mut().enumerate() {
            button.id = String::new();
            button.title = format!("{}{j}", button.title.trim());
        }
        if step.buttons.is_empty() && (step.message_type == StepType::Buttons || step.input_type == InputType::Select) {
            step.buttons = vec![button("", "Yes")];
        }
        if step.message_type == StepType::ApiFetch {
            let config = step.api_config.get_or_insert_with(|| fetch_step("").api_config.unwrap());
            config.url = format!("https://x/{}", config.url);
            config.timeout_ms = config.timeout_ms.clamp(1, MAX_FETCH_TIMEOUT_MS);
        }
        if step.message_type == StepType::WhatsappFlow {
            let config = step
                .whatsapp_flow
                .get_or_insert_with(|| WhatsappFlowConfig { flow_id: String::new(), parameters: Value::Null });
            config.flow_id.insert(0, '1');
        }
        step
    }

    /// A user's answer or an API outcome.
    fn event_strategy() -> impl Strategy<Value = (String, Option<FetchOutcome>)> {
        let input =
            prop_oneof!["[a-c]{0,2}", "[A-Ca-c ]{0,4}", "-?[0-9]{1,3}(\\.[0-9])?", "[a-z]@[a-z]\\.[a-z]", "\\PC{0,8}"];
        let outcome = prop_oneof![
            Just(FetchOutcome::Json(json!({"a": 1}))),
            Just(FetchOutcome::Json(json!("just a string"))),
            "[a-z]{0,5}".prop_map(FetchOutcome::Failed),
        ];
        (input, prop::option::of(outcome))
    }

    fn check(flow: &Flow, progress: &Progress) -> Result<(), TestCaseError> {
        if let Some(position) = progress.position {
            prop_assert!(position.step < flow.steps.len(), "{:?} in a flow of {}", position, flow.steps.len());
        }
        let fetching = matches!(progress.position, Some(Position { waiting: Waiting::Fetch, .. }));
        prop_assert_eq!(progress.fetch.is_some(), fetching);
        if progress.completed || progress.transfer.is_some() {
            prop_assert_eq!(progress.position, None);
        }
        prop_assert!(!(progress.completed && progress.transfer.is_some()));
        Ok(())
    }

    /// Drives `flow` with `events`, restarting it whenever it ends.
    fn drive(flow: &Flow, events: &[(String, Option<FetchOutcome>)]) -> Result<(), TestCaseError> {
        let mut vars = Map::new();
        let mut progress = start(flow, None, &mut vars, true);
        check(flow, &progress)?;
        for (input, outcome) in events {
            progress = match (progress.position, outcome) {
                (None, _) => start(flow, None, &mut vars, true),
                (Some(Position { step, waiting: Waiting::Input }), _) => take_input(flow, step, input, &mut vars, true),
                (Some(Position { step, waiting: Waiting::Fetch }), Some(outcome)) => {
                    take_fetch(flow, step, outcome.clone(), &mut vars, "fallback", true)
                }
                (Some(Position { step, waiting: Waiting::Fetch }), None) => {
                    take_fetch(flow, step, FetchOutcome::Failed("timeout".into()), &mut vars, "", true)
                }
            };
            check(flow, &progress)?;
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_flows_never_panic_and_positions_stay_in_range(
            flow in flow_strategy(),
            events in prop::collection::vec(event_strategy(), 0..12),
            stray in 0usize..10,
            input in "\\PC{0,6}",
        ) {
            drive(&flow, &events)?;
            let mut validated = flow.clone();
            if validate(&mut validated).is_ok() {
                let ids: HashSet<&str> = validated.steps.iter().map(|s| s.id.as_str()).collect();
                prop_assert_eq!(ids.len(), validated.steps.len());
                prop_assert!(validated.steps.windows(2).all(|w| w[0].step_order <= w[1].step_order));
                drive(&validated, &events)?;
            }
            // The caller may hold a stale position: any index is handled.
            let mut vars = Map::new();
            check(&flow, &take_input(&flow, stray, &input, &mut vars, true))?;
            check(&flow, &take_fetch(&flow, stray, FetchOutcome::Json(json!(null)), &mut vars, "", true))?;
            check(&flow, &start(&flow, Some(stray), &mut vars, true))?;
        }

        #[test]
        fn validated_flows_run_without_getting_stuck(
            flow in valid_flow_strategy(),
            events in prop::collection::vec(event_strategy(), 0..16),
        ) {
            let mut validated = flow.clone();
            prop_assert_eq!(validate(&mut validated), Ok(()));
            let ids: HashSet<&str> = validated.steps.iter().map(|s| s.id.as_str()).collect();
            prop_assert_eq!(ids.len(), validated.steps.len());
            drive(&validated, &events)?;
            // Validation is idempotent: a saved flow validates again unchanged.
            let mut again = validated.clone();
            prop_assert_eq!(validate(&mut again), Ok(()));
            prop_assert_eq!(again, validated);
        }

        #[test]
        fn find_step_on_an_edited_flow_finds_a_valid_step_or_none(
            flow in flow_strategy(),
            removed in prop::collection::vec(any::<bool>(), 7),
            renamed in prop::collection::vec(prop::option::of("[a-d]{0,2}"), 7),
            target in 0usize..7,
        ) {
            let query = flow.steps.get(target).map(|s| s.step_name.clone()).unwrap_or_else(|| "a".into());
            let mut edited = flow.clone();
            let mut index = 0;
            edited.steps.retain(|_| { index += 1; !removed[index - 1] });
            for (step, name) in edited.steps.iter_mut().zip(&renamed) {
                if let Some(name) = name {
                    step.step_name = name.clone();
                }
            }
            if let Some(found) = find_step(&edited, &query) {
                prop_assert!(found < edited.steps.len());
                let step = &edited.steps[found];
                prop_assert!(step.step_name == query || step.id == query);
            }
        }
    }
}
