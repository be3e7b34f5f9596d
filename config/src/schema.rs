//! Checks a YAML tree against the shape of the built-in defaults.
//!
//! The defaults ([`crate::Settings::default`]) double as the schema: every key they have is
//! a known key, and the kind of its default value is the kind the key takes. Walking the
//! user's tree against them finds *every* unknown key and wrong type in one pass (serde
//! would stop at the first), and normalises the few lenient forms (a comma-separated
//! string for a list, numbers in librdkafka property maps).

use serde_yaml::{Mapping, Value};

/// The kind of value a key takes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    Bool,
    /// A non-negative whole number.
    Int,
    Str,
    /// A string, or null / absent.
    OptStr,
    /// A list of strings (a comma-separated string is accepted too).
    StrList,
    /// A free-form map of scalar values, stringified (librdkafka properties).
    FreeMap,
    /// A section with known keys.
    Section(Vec<(String, Shape)>),
}

impl Shape {
    /// Derives the shape from a default value.
    pub(crate) fn of(default: &Value) -> Shape {
        match default {
            Value::Null => Shape::OptStr,
            Value::Bool(_) => Shape::Bool,
            Value::Number(_) => Shape::Int,
            Value::String(_) => Shape::Str,
            Value::Sequence(_) => Shape::StrList,
            Value::Mapping(m) if m.is_empty() => Shape::FreeMap,
            Value::Mapping(m) => Shape::Section(
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), Shape::of(v))))
                    .collect(),
            ),
            Value::Tagged(t) => Shape::of(&t.value),
        }
    }

    fn field(&self, key: &str) -> Option<&Shape> {
        match self {
            Shape::Section(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, s)| s),
            _ => None,
        }
    }

    pub(crate) fn keys(&self) -> Vec<&str> {
        match self {
            Shape::Section(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The shape at a dotted path, if the path is known.
    pub(crate) fn at(&self, path: &[&str]) -> Option<&Shape> {
        path.iter().try_fold(self, |shape, key| shape.field(key))
    }

    fn expected(&self) -> &'static str {
        match self {
            Shape::Bool => "true or false",
            Shape::Int => "a whole number >= 0",
            Shape::Str => "a string",
            Shape::OptStr => "a string or null",
            Shape::StrList => "a list of strings",
            Shape::FreeMap => "a map of property names to values",
            Shape::Section(_) => "a section (a map of keys)",
        }
    }
}

/// A problem found by [`normalise`]: the dotted key and what is wrong.
pub(crate) type Problem = (String, String);

/// Checks `value` against `shape`, normalising lenient forms in place. Every problem is
/// pushed (dotted key, message); `visited` gets every leaf key present.
pub(crate) fn normalise(
    value: &mut Value,
    shape: &Shape,
    path: &str,
    problems: &mut Vec<Problem>,
    visited: &mut Vec<String>,
) {
    match shape {
        Shape::Section(_) => {
            let Value::Mapping(map) = value else {
                if !value.is_null() || path.is_empty() {
                    problems.push((path.to_string(), wrong(shape, value)));
                } else {
                    // `kafka:` with nothing under it: take the defaults.
                    *value = Value::Mapping(Mapping::new());
                }
                return;
            };
            for (k, v) in map.iter_mut() {
                let Some(key) = k.as_str() else {
                    problems.push((path.to_string(), format!("key {} is not a string", show(k))));
                    continue;
                };
                let child = join(path, key);
                match shape.field(key) {
                    Some(s) => normalise(v, s, &child, problems, visited),
                    None => problems.push((child, unknown(key, &shape.keys()))),
                }
            }
        }
        leaf => {
            visited.push(path.to_string());
            if let Err(msg) = normalise_leaf(value, leaf) {
                problems.push((path.to_string(), msg));
            }
        }
    }
}

fn normalise_leaf(value: &mut Value, shape: &Shape) -> Result<(), String> {
    let ok = match (shape, &*value) {
        (Shape::Bool, Value::Bool(_)) => true,
        (Shape::Int, Value::Number(n)) => n.as_u64().is_some(),
        (Shape::Str, Value::String(_)) => true,
        (Shape::OptStr, Value::String(_) | Value::Null) => true,
        (Shape::StrList, Value::Sequence(items)) => items.iter().all(Value::is_string),
        (Shape::StrList, Value::String(s)) => {
            *value = Value::Sequence(split_list(s).into_iter().map(Value::String).collect());
            true
        }
        (Shape::FreeMap, Value::Null) => {
            *value = Value::Mapping(Mapping::new());
            true
        }
        (Shape::FreeMap, Value::Mapping(m)) => {
            let mut out = Mapping::new();
            for (k, v) in m {
                let (Some(k), Some(v)) = (scalar(k), scalar(v)) else {
                    // The key only: a free map holds librdkafka properties, some secret.
                    return Err(format!(
                        "expected {}, found an entry {} whose value is not text, a number or a boolean",
                        shape.expected(),
                        show(k)
                    ));
                };
                out.insert(Value::String(k), Value::String(v));
            }
            *value = Value::Mapping(out);
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(wrong(shape, value))
    }
}

/// Parses an environment variable's text into a value of `shape`.
pub(crate) fn from_env_text(text: &str, shape: &Shape) -> Result<Value, String> {
    let mut value = match shape {
        Shape::Str | Shape::OptStr => Value::String(text.to_string()),
        Shape::StrList if !text.trim_start().starts_with('[') => Value::String(text.to_string()),
        Shape::Section(_) => {
            return Err("is a section: set its keys one by one (SECTION__KEY)".into())
        }
        // Booleans, numbers, JSON lists and maps: YAML is a superset of JSON.
        // A map may hold secrets: its text is never shown, only where it fails.
        Shape::FreeMap => serde_yaml::from_str::<Value>(text).map_err(|e| {
            let at = e.location().map_or(String::new(), |l| {
                format!(" (line {}, column {})", l.line(), l.column())
            });
            format!("expected {}, cannot parse the value{at}", shape.expected())
        })?,
        _ => serde_yaml::from_str::<Value>(text)
            .map_err(|e| format!("expected {}, cannot parse {text:?}: {e}", shape.expected()))?,
    };
    normalise_leaf(&mut value, shape)?;
    Ok(value)
}

/// Sets `value` at a dotted path inside `root`, creating sections on the way.
pub(crate) fn set_path(root: &mut Value, path: &[&str], value: Value) {
    let mut node = root;
    for key in &path[..path.len() - 1] {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        node = map
            .entry(Value::String((*key).to_string()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    if !node.is_mapping() {
        *node = Value::Mapping(Mapping::new());
    }
    node.as_mapping_mut()
        .expect("just made a mapping")
        .insert(Value::String(path[path.len() - 1].to_string()), value);
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn wrong(shape: &Shape, found: &Value) -> String {
    let found = match (shape, found) {
        // A free map holds librdkafka properties, some secret: name what was found, not
        // its text.
        (Shape::FreeMap, Value::String(_)) => "text".to_string(),
        (Shape::FreeMap, Value::Number(_)) => "a number".to_string(),
        _ => show(found),
    };
    format!("expected {}, found {found}", shape.expected())
}

/// A short rendering of a value for error messages.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// "unknown key" with the closest known key as a hint.
pub(crate) fn unknown(key: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown key {key:?}");
    if let Some(best) = closest(key, known) {
        msg.push_str(&format!(" (did you mean {best:?}?)"));
    } else if !known.is_empty() {
        msg.push_str(&format!("; known keys: {}", known.join(", ")));
    }
    msg
}

fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 1 + k.len() / 4)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_the_closest_key() {
        assert_eq!(
            unknown("bootstrap_server", &["bootstrap_servers", "input_topic"]),
            "unknown key \"bootstrap_server\" (did you mean \"bootstrap_servers\"?)"
        );
        assert!(unknown("zzz", &["a", "b"]).contains("known keys: a, b"));
    }

    #[test]
    fn comma_string_becomes_a_list() {
        let v = from_env_text("h1:9092, h2:9092", &Shape::StrList).unwrap();
        assert_eq!(
            v,
            serde_yaml::from_str::<Value>("[h1:9092, h2:9092]").unwrap()
        );
        let v = from_env_text(r#"["h3:9092"]"#, &Shape::StrList).unwrap();
        assert_eq!(v, serde_yaml::from_str::<Value>("[h3:9092]").unwrap());
    }

    #[test]
    fn env_numbers_and_bools_are_typed() {
        assert!(from_env_text("7", &Shape::Int).is_ok());
        assert!(from_env_text("-1", &Shape::Int)
            .unwrap_err()
            .contains("whole number"));
        assert!(from_env_text("yes please", &Shape::Bool).is_err());
        assert_eq!(
            from_env_text("123", &Shape::Str).unwrap(),
            Value::String("123".into())
        );
    }
}
