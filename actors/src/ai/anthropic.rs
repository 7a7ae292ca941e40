//! The Anthropic Messages client: `POST {base}/v1/messages` with `x-api-key`.

use serde_json::{json, Value};

use super::prompt::ChatTurn;
use super::{post_json, AiAnswer, AiError, ChatRequest};

/// The API version every request names.
const API_VERSION: &str = "2023-06-01";
/// Highest temperature the API accepts.
const MAX_TEMPERATURE: f64 = 1.0;

/// Asks for one message.
pub(super) async fn complete(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    request: &ChatRequest<'_>,
) -> Result<AiAnswer, AiError> {
    let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
    let builder = http.post(url).header("x-api-key", api_key).header("anthropic-version", API_VERSION);
    let answer = post_json(builder, &request_body(request)).await?;
    parse_answer(&answer)
}

/// `{model, max_tokens, temperature, system, messages}`; no `system` when it is empty.
fn request_body(request: &ChatRequest<'_>) -> Value {
    let messages: Vec<Value> = alternate(request.turns)
        .into_iter()
        .map(|turn| json!({ "role": turn.role, "content": turn.content }))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.max(1),
        "temperature": request.temperature.clamp(0.0, MAX_TEMPERATURE),
        "messages": messages,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    body
}

/// The turns as the API requires them: starting with a user turn and alternating, so leading
/// assistant turns are dropped and consecutive turns of one role are joined.
fn alternate(turns: &[ChatTurn]) -> Vec<ChatTurn> {
    let mut out: Vec<ChatTurn> = Vec::with_capacity(turns.len());
    for turn in turns.iter().skip_while(|turn| turn.role != "user") {
        match out.last_mut() {
            Some(last) if last.role == turn.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&turn.content);
            }
            _ => out.push(turn.clone()),
        }
    }
    out
}

/// The text of the `content` items of type `text`, joined, and `usage.input_tokens + output_tokens`.
fn parse_answer(answer: &Value) -> Result<AiAnswer, AiError> {
    let items =
        answer.get("content").and_then(Value::as_array).ok_or_else(|| AiError::Malformed("no content array".into()))?;
    let text: String = items
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|item| item.get("text").and_then(Value::as_str))
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Err(AiError::Malformed("no text in content".into()));
    }
    let usage = |name: &str| answer.pointer(&format!("/usage/{name}")).and_then(Value::as_u64);
    let tokens_used = match (usage("input_tokens"), usage("output_tokens")) {
        (None, None) => None,
        (input, output) => Some(super::saturate(input.unwrap_or(0).saturating_add(output.unwrap_or(0)))),
    };
    Ok(AiAnswer { text: text.to_string(), tokens_used })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_system_prompt_apart_from_the_messages() {
        let turns = [ChatTurn::user("hi"), ChatTurn::assistant("hello"), ChatTurn::user("prices?")];
        let request = ChatRequest {
            model: "claude-3-5-sonnet-latest",
            temperature: 0.5,
            max_tokens: 300,
            system: "Be brief.",
            turns: &turns,
        };

        assert_eq!(
            request_body(&request),
            json!({
                "model": "claude-3-5-sonnet-latest",
                "max_tokens": 300,
                "temperature": 0.5,
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "prices?"},
                ],
            })
        );
    }

    #[test]
    fn a_temperature_over_the_apis_maximum_is_clamped() {
        let turns = [ChatTurn::user("hi")];
        let request = ChatRequest { model: "m", temperature: 1.5, max_tokens: 10, system: "", turns: &turns };

        let body = request_body(&request);

        assert_eq!(body["temperature"], json!(1.0));
        assert!(body.get("system").is_none());
    }

    #[test]
    fn turns_start_with_the_user_and_alternate() {
        let turns = [
            ChatTurn::assistant("Welcome!"),
            ChatTurn::assistant("How can I help?"),
            ChatTurn::user("hi"),
            ChatTurn::user("anyone?"),
            ChatTurn::assistant("yes"),
            ChatTurn::assistant("Anna here"),
            ChatTurn::user("prices?"),
        ];

        assert_eq!(
            alternate(&turns),
            vec![ChatTurn::user("hi\n\nanyone?"), ChatTurn::assistant("yes\n\nAnna here"), ChatTurn::user("prices?"),]
        );
    }

    #[test]
    fn the_answer_joins_the_text_items_and_sums_the_tokens() {
        let answer = json!({
            "content": [
                {"type": "text", "text": "Hello"},
                {"type": "tool_use", "id": "x", "name": "y", "input": {}},
                {"type": "text", "text": " there."},
            ],
            "usage": {"input_tokens": 30, "output_tokens": 12},
        });

        assert_eq!(parse_answer(&answer).unwrap(), AiAnswer { text: "Hello there.".into(), tokens_used: Some(42) });
    }

    #[test]
    fn an_answer_without_text_is_malformed() {
        for answer in [
            json!({"content": []}),
            json!({"content": [{"type": "tool_use"}]}),
            json!({"content": "text"}),
            json!({"type": "error"}),
        ] {
            assert!(matches!(parse_answer(&answer), Err(AiError::Malformed(_))), "{answer}");
        }
    }
}
