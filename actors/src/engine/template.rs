//! `{{variable}}` placeholders: rendering messages, notes, URLs and JSON bodies against a
//! conversation's variables.
//!
//! Rendering is total: a placeholder naming an unset variable becomes empty, an unclosed `{{`
//! stays as written, and no input makes it panic.

use serde_json::{Map, Value};

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// Replaces `{{name}}` (whitespace inside the braces allowed: `{{ name }}`) with the variable's
/// value: strings as they are, numbers and booleans in their JSON spelling, null or unset as
/// nothing, arrays and objects as compact JSON.
///
/// An unclosed `{{` is left verbatim. When braces nest (`{{{name}}}`), the `{{` nearest the
/// closing `}}` opens the placeholder and the braces before it are kept (`{value}`).
pub fn render(text: &str, vars: &Map<String, Value>) -> String {
    render_with(text, vars, push_value)
}

/// Like [`render`] for a URL template: every value is percent-encoded (all but RFC 3986's
/// unreserved characters), so text a user typed can fill a path segment or a query value
/// but never add a path, a query parameter or another host.
pub fn render_url(template: &str, vars: &Map<String, Value>) -> String {
    render_with(template, vars, |out, value| {
        let mut plain = String::new();
        push_value(&mut plain, value);
        for byte in plain.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    })
}

fn render_with(text: &str, vars: &Map<String, Value>, mut push: impl FnMut(&mut String, Option<&Value>)) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(OPEN) {
        let Some(close) = rest[open + OPEN.len()..].find(CLOSE).map(|c| open + OPEN.len() + c) else {
            break;
        };
        // The `{{` nearest the `}}` opens the placeholder; anything before it is plain text.
        let open = rest[..close].rfind(OPEN).unwrap_or(open);
        out.push_str(&rest[..open]);
        let name = rest[open + OPEN.len()..close].trim();
        push(&mut out, vars.get(name));
        rest = &rest[close + CLOSE.len()..];
    }
    out.push_str(rest);
    out
}

/// Renders every string inside `value` (array items and object values, recursively); object
/// keys and non-string scalars are kept as they are.
pub fn render_json(value: &Value, vars: &Map<String, Value>) -> Value {
    match value {
        Value::String(text) => Value::String(render(text, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|item| render_json(item, vars)).collect()),
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(key, item)| (key.clone(), render_json(item, vars))).collect())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    }
}

/// Appends how a variable reads inside a message.
fn push_value(out: &mut String, value: Option<&Value>) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => out.push_str(text),
        Some(Value::Bool(flag)) => out.push_str(if *flag { "true" } else { "false" }),
        Some(Value::Number(number)) => out.push_str(&number.to_string()),
        Some(other @ (Value::Array(_) | Value::Object(_))) => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn vars(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("vars must be an object"),
        }
    }

    #[test]
    fn url_values_are_percent_encoded_so_they_cannot_change_the_url() {
        let vars = vars(json!({"order": "12/../admin?x=1#f", "name": "Zoë"}));
        assert_eq!(
            render_url("https://api.example.com/orders/{{order}}?n={{name}}", &vars),
            "https://api.example.com/orders/12%2F..%2Fadmin%3Fx%3D1%23f?n=Zo%C3%AB"
        );
    }

    #[test]
    fn placeholders_are_replaced_with_values() {
        let vars = vars(json!({"name": "Ada", "count": 3, "price": 9.5, "vip": true}));
        assert_eq!(
            render("Hi {{name}}, {{ count }} items at {{price}} (vip: {{vip}})", &vars),
            "Hi Ada, 3 items at 9.5 (vip: true)"
        );
    }

    #[test]
    fn unset_and_null_variables_render_empty() {
        let vars = vars(json!({"gone": null}));
        assert_eq!(render("[{{missing}}][{{gone}}][{{}}]", &vars), "[][][]");
    }

    #[test]
    fn arrays_and_objects_render_as_compact_json() {
        let vars = vars(json!({"list": [1, "a"], "obj": {"k": "v"}}));
        assert_eq!(render("{{list}} {{obj}}", &vars), r#"[1,"a"] {"k":"v"}"#);
    }

    #[test]
    fn an_unclosed_placeholder_is_left_verbatim() {
        let vars = vars(json!({"name": "Ada"}));
        assert_eq!(render("Hi {{name}}, {{oops", &vars), "Hi Ada, {{oops");
        assert_eq!(render("{{", &vars), "{{");
        assert_eq!(render("}} {{name}", &vars), "}} {{name}");
    }

    #[test]
    fn nested_braces_open_at_the_innermost_placeholder() {
        let vars = vars(json!({"name": "Ada"}));
        assert_eq!(render("{{{name}}}", &vars), "{Ada}");
        assert_eq!(render("{{ {{name}}", &vars), "{{ Ada");
    }

    #[test]
    fn values_are_not_rendered_again() {
        let vars = vars(json!({"a": "{{b}}", "b": "x"}));
        assert_eq!(render("{{a}}", &vars), "{{b}}");
    }

    #[test]
    fn render_json_renders_strings_and_keeps_keys() {
        let vars = vars(json!({"id": "42"}));
        let body = json!({"order": "{{id}}", "{{id}}": [1, "n{{id}}", {"deep": "{{id}}"}], "flag": true});
        assert_eq!(
            render_json(&body, &vars),
            json!({"order": "42", "{{id}}": [1, "n42", {"deep": "42"}], "flag": true})
        );
    }

    proptest! {
        #[test]
        fn render_never_panics(text in "\\PC{0,64}|[{} a-z]{0,40}", value in "\\PC{0,8}") {
            let mut map = Map::new();
            map.insert("a".into(), Value::String(value));
            let _ = render(&text, &map);
        }

        #[test]
        fn text_without_placeholders_is_unchanged(text in "\\PC{0,64}") {
            prop_assume!(!text.contains(OPEN));
            prop_assert_eq!(render(&text, &Map::new()), text);
        }

        #[test]
        fn every_set_variable_shows_up(
            parts in prop::collection::vec(("[a-z_]{1,8}", "[^{}]{0,10}", "[^{}]{0,6}"), 1..5)
        ) {
            let mut map = Map::new();
            let mut template = String::new();
            for (name, value, between) in &parts {
                map.insert(name.clone(), Value::String(value.clone()));
                template.push_str(&format!("{{{{ {name} }}}}{between}"));
            }
            let rendered = render(&template, &map);
            for name in map.keys() {
                let value = map[name].as_str().unwrap_or_default();
                prop_assert!(rendered.contains(value), "{:?} lacks {:?}", rendered, value);
            }
        }
    }
}
