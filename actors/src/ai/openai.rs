//! The OpenAI Chat Completions client: `POST {base}/chat/completions` with a bearer key.

use serde_json::{json, Value};

use super::{post_json, AiAnswer, AiError, ChatRequest};

/// Highest temperature the API accepts.
const MAX_TEMPERATURE: f64 = 2.0;

/// Asks for one completion.
pub(super) async fn complete(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    request: &ChatRequest<'_>,
) -> Result<AiAnswer, AiError> {
    let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let answer = post_json(http.post(url).bearer_auth(api_key), &request_body(request)).await?;
    parse_answer(&answer)
}

/// `{model, messages: [system, ...turns], temperature, max_tokens}`; no system message when the
/// system prompt is empty.
fn request_body(request: &ChatRequest<'_>) -> Value {
    let mut messages = Vec::with_capacity(request.turns.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({ "role": "system", "content": request.system }));
    }
    messages.extend(request.turns.iter().map(|turn| json!({ "role": turn.role, "content": turn.content })));
    json!({
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature.clamp(0.0, MAX_TEMPERATURE),
        "max_tokens": request.max_tokens.max(1),
    })
}

/// `choices[0].message.content` (non-empty) and `usage.total_tokens`.
fn parse_answer(answer: &Value) -> Result<AiAnswer, AiError> {
    let text = answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .ok_or_else(|| AiError::Malformed("no text in choices[0].message.content".into()))?;
    let tokens_used = answer.pointer("/usage/total_tokens").and_then(Value::as_u64).map(super::saturate);
    Ok(AiAnswer { text: text.to_string(), tokens_used })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::prompt::ChatTurn;

    #[test]
    fn the_body_has_the_system_prompt_first_then_the_turns() {
        let turns = [ChatTurn::user("hi"), ChatTurn::assistant("hello"), ChatTurn::user("prices?")];
        let request =
            ChatRequest { model: "gpt-4o-mini", temperature: 0.3, max_tokens: 200, system: "Be brief.", turns: &turns };

        assert_eq!(
            request_body(&request),
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "prices?"},
                ],
                "temperature": 0.3,
                "max_tokens": 200,
            })
        );
    }

    #[test]
    fn an_empty_system_prompt_is_left_out() {
        let turns = [ChatTurn::user("hi")];
        let request = ChatRequest { model: "m", temperature: 0.7, max_tokens: 10, system: "", turns: &turns };

        assert_eq!(request_body(&request)["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn the_answer_is_the_first_choice_with_the_total_token_count() {
        let answer = json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " Hello! "}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        });

        assert_eq!(parse_answer(&answer).unwrap(), AiAnswer { text: "Hello!".into(), tokens_used: Some(25) });
    }

    #[test]
    fn an_answer_without_usage_has_no_token_count() {
        let answer = json!({"choices": [{"message": {"content": "Hi"}}]});

        assert_eq!(parse_answer(&answer).unwrap().tokens_used, None);
    }

    #[test]
    fn an_answer_without_text_is_malformed() {
        for answer in [
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": null}}]}),
            json!({"choices": [{"message": {"content": "  "}}]}),
            json!({"error": "x"}),
        ] {
            assert!(matches!(parse_answer(&answer), Err(AiError::Malformed(_))), "{answer}");
        }
    }
}
