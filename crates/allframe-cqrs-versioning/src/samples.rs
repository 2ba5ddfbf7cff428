//! Example payloads generated from a JSON Schema, for the registry's compatibility checks: the
//! smallest and the fullest form of each object, each branch of a choice, each value of an
//! enumeration. An example that its own schema rejects is never used, so a refusal is always
//! shown by a payload the old schema accepts; a change no example exercises can pass.

use serde_json::{Map, Value, json};

/// At most this many examples per schema node (and per payload).
const MAX: usize = 48;
/// References followed at most this deep (recursive types end in their smallest form).
const MAX_DEPTH: usize = 12;

/// Examples of payloads `schema` describes (its `$ref`s resolved in `schema` itself).
pub(crate) fn examples(schema: &Value) -> Vec<Value> {
    let mut out = of(schema, schema, 0);
    out.truncate(MAX);
    out
}

fn of(node: &Value, root: &Value, depth: usize) -> Vec<Value> {
    let Value::Object(node) = node else {
        // `true` or `{}`: anything goes.
        return vec![Value::Null];
    };
    if depth > MAX_DEPTH {
        return vec![Value::Null];
    }
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let target = reference.strip_prefix('#').and_then(|pointer| root.pointer(pointer));
        return target.map_or_else(|| vec![Value::Null], |target| of(target, root, depth + 1));
    }
    if let Some(value) = node.get("const") {
        return vec![value.clone()];
    }
    if let Some(Value::Array(values)) = node.get("enum") {
        return values.iter().take(MAX).cloned().collect();
    }
    for choice in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = node.get(choice) {
            let mut out = Vec::new();
            for branch in branches {
                // A branch inherits what the node around it says (schemars puts a shared
                // `type` or `properties` beside the choice).
                let mut merged = node.clone();
                merged.remove(choice);
                if let Value::Object(branch) = branch {
                    merged.extend(branch.clone());
                }
                push_all(&mut out, of(&Value::Object(merged), root, depth + 1));
            }
            return out;
        }
    }
    if let Some(Value::Array(parts)) = node.get("allOf") {
        let mut merged = node.clone();
        merged.remove("allOf");
        for part in parts {
            if let Value::Object(part) = resolve(part, root) {
                for (key, value) in part {
                    merge_keyword(&mut merged, key, value);
                }
            }
        }
        return of(&Value::Object(merged), root, depth + 1);
    }
    match node.get("type") {
        Some(Value::Array(types)) => {
            let mut out = Vec::new();
            for single in types {
                let mut one = node.clone();
                one.insert("type".into(), single.clone());
                push_all(&mut out, of(&Value::Object(one), root, depth));
            }
            out
        }
        Some(Value::String(kind)) => typed(kind, node, root, depth),
        _ if node.contains_key("properties") => typed("object", node, root, depth),
        _ => vec![Value::Null],
    }
}

fn typed(kind: &str, node: &Map<String, Value>, root: &Value, depth: usize) -> Vec<Value> {
    let number = |key: &str| node.get(key).and_then(Value::as_f64);
    match kind {
        "null" => vec![Value::Null],
        "boolean" => vec![json!(true)],
        "integer" => {
            let low = number("minimum").or(number("exclusiveMinimum").map(|m| m + 1.0)).unwrap_or(0.0);
            vec![json!(low.ceil() as i64)]
        }
        "number" => vec![json!(number("minimum").map_or(0.5, |m| m + 0.5))],
        "string" => vec![Value::String(string(node))],
        "array" => array(node, root, depth),
        "object" => object(node, root, depth),
        _ => vec![Value::Null],
    }
}

fn string(node: &Map<String, Value>) -> String {
    let format = node.get("format").and_then(Value::as_str).unwrap_or("");
    let text = match format {
        "date-time" => "2026-01-01T00:00:00Z",
        "date" => "2026-01-01",
        "time" => "00:00:00Z",
        "uuid" => "00000000-0000-0000-0000-000000000000",
        "email" => "someone@example.com",
        "uri" => "https://example.com/",
        _ => "text",
    };
    let min = node.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let mut text = text.to_owned();
    while text.len() < min {
        text.push('x');
    }
    text
}

fn array(node: &Map<String, Value>, root: &Value, depth: usize) -> Vec<Value> {
    if let Some(Value::Array(prefix)) = node.get("prefixItems") {
        let items: Vec<Value> = prefix.iter().map(|item| first(item, root, depth)).collect();
        return vec![Value::Array(items)];
    }
    let min = node.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
    let Some(items) = node.get("items") else { return vec![Value::Array(vec![Value::Null; min])] };
    let mut out = Vec::new();
    if min == 0 {
        out.push(json!([]));
    }
    for item in of(items, root, depth + 1) {
        out.push(Value::Array(vec![item; min.max(1)]));
    }
    out
}

/// The smallest form (required properties only), the fullest (every property), and the fullest
/// with each property's other examples in turn.
fn object(node: &Map<String, Value>, root: &Value, depth: usize) -> Vec<Value> {
    let empty = Map::new();
    let properties = node.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let required: Vec<&str> =
        node.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let options: Vec<(&String, Vec<Value>)> =
        properties.iter().map(|(name, schema)| (name, of(schema, root, depth + 1))).collect();
    let pick = |all: bool| -> Map<String, Value> {
        let chosen = options.iter().filter(|(name, _)| all || required.contains(&name.as_str()));
        chosen.filter_map(|(name, values)| Some(((*name).clone(), values.first()?.clone()))).collect()
    };
    let mut out = vec![Value::Object(pick(false))];
    let fullest = pick(true);
    push(&mut out, Value::Object(fullest.clone()));
    if properties.is_empty()
        && let Some(values) = node.get("additionalProperties").filter(|v| v.is_object())
    {
        push(&mut out, json!({ "key": first(values, root, depth) }));
    }
    for (name, values) in &options {
        for value in values.iter().skip(1) {
            let mut other = fullest.clone();
            other.insert((*name).clone(), value.clone());
            push(&mut out, Value::Object(other));
        }
    }
    out
}

fn first(node: &Value, root: &Value, depth: usize) -> Value {
    of(node, root, depth + 1).into_iter().next().unwrap_or(Value::Null)
}

fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => root.pointer(pointer).unwrap_or(node),
        None => node,
    }
}

/// `allOf` parts: properties and required lists add up; other keywords, the first one wins.
fn merge_keyword(into: &mut Map<String, Value>, key: &str, value: &Value) {
    match (into.get_mut(key), value) {
        (Some(Value::Object(have)), Value::Object(more)) if key == "properties" => {
            have.extend(more.clone());
        }
        (Some(Value::Array(have)), Value::Array(more)) if key == "required" => have.extend(more.iter().cloned()),
        (None, _) => {
            into.insert(key.to_owned(), value.clone());
        }
        _ => {}
    }
}

fn push(out: &mut Vec<Value>, value: Value) {
    if out.len() < MAX && !out.contains(&value) {
        out.push(value);
    }
}

fn push_all(out: &mut Vec<Value>, values: Vec<Value>) {
    for value in values {
        push(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_come_smallest_and_fullest_and_choices_each() {
        let schema = json!({
            "oneOf": [
                { "type": "object", "required": ["Deposited"], "properties": {
                    "Deposited": { "type": "object", "required": ["cents"], "properties": {
                        "cents": { "type": "integer", "minimum": 0 },
                        "note": { "type": ["string", "null"] } } } } },
                { "type": "string", "enum": ["Closed"] }
            ]
        });
        let examples = examples(&schema);
        assert!(examples.contains(&json!({ "Deposited": { "cents": 0 } })), "{examples:?}");
        assert!(examples.contains(&json!({ "Deposited": { "cents": 0, "note": "text" } })), "{examples:?}");
        assert!(examples.contains(&json!({ "Deposited": { "cents": 0, "note": null } })), "{examples:?}");
        assert!(examples.contains(&json!("Closed")), "{examples:?}");
    }

    #[test]
    fn references_resolve_and_recursion_ends() {
        let schema = json!({
            "$ref": "#/$defs/Node",
            "$defs": { "Node": { "type": "object", "required": ["value"], "properties": {
                "value": { "type": "integer" },
                "next": { "anyOf": [{ "$ref": "#/$defs/Node" }, { "type": "null" }] } } } }
        });
        let examples = examples(&schema);
        assert!(examples.contains(&json!({ "value": 0 })), "{examples:?}");
        assert!(examples.iter().any(|e| e["next"]["value"] == json!(0)), "{examples:?}");
    }
}
