//! Values of librdkafka properties that point elsewhere: `${file:PATH}` and `${env:NAME}`.
//!
//! A secret such as `sasl.password` should not sit in config.yaml: an operator mounts it
//! as a file (a Kubernetes Secret, systemd's `LoadCredential=`) or passes it in the
//! environment, and writes `sasl.password: ${file:/run/secrets/kafka/password}`. The
//! syntax is Kafka Connect's config providers' (`${file:...}`, `${env:...}`), taken whole:
//! a value is either one reference or plain text, never text with a reference inside.
//!
//! Invariants: a reference is resolved once, when the settings are loaded; a file's
//! content loses one trailing newline (what `echo` and editors add) and nothing else; a
//! missing file or variable is an error naming the property and the file or variable,
//! never the content; the resolved value lives only in the settings map, whose `Debug`
//! hides secret properties.

/// What a property's value stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<'a> {
    /// The text itself.
    Plain,
    /// The content of this file.
    File(&'a str),
    /// The value of this environment variable.
    Env(&'a str),
}

/// Reads a property value: `${file:PATH}`, `${env:NAME}` or plain text. A value that
/// starts with `${` and ends with `}` but is neither is an error (a typo such as
/// `${flie:...}` must not be sent to the broker as a password).
pub fn parse(value: &str) -> Result<Reference<'_>, String> {
    let Some(inner) = value
        .trim()
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
    else {
        return Ok(Reference::Plain);
    };
    match inner.split_once(':') {
        Some(("file", path)) if !path.trim().is_empty() => Ok(Reference::File(path.trim())),
        Some(("env", name)) if !name.trim().is_empty() => Ok(Reference::Env(name.trim())),
        _ => Err(format!(
            "a reference must be ${{file:PATH}} or ${{env:NAME}}, not {value:?}"
        )),
    }
}

/// Resolves `value` with `env` (the process environment as loaded).
pub fn resolve(value: &str, env: &[(String, String)]) -> Result<String, String> {
    match parse(value)? {
        Reference::Plain => Ok(value.to_string()),
        Reference::File(path) => {
            let mut text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the file {path} it names: {e}"))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(text)
        }
        Reference::Env(name) => env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("the environment variable {name} it names is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay() {
        assert_eq!(parse("SASL_SSL"), Ok(Reference::Plain));
        assert_eq!(parse("$file"), Ok(Reference::Plain));
        assert_eq!(parse("${file:"), Ok(Reference::Plain));
        assert_eq!(resolve("abc", &[]).unwrap(), "abc");
    }

    #[test]
    fn references_are_read() {
        assert_eq!(parse("${file:/a/b}"), Ok(Reference::File("/a/b")));
        assert_eq!(parse(" ${env:KAFKA_PW} "), Ok(Reference::Env("KAFKA_PW")));
        let env = vec![("KAFKA_PW".to_string(), "s3cret".to_string())];
        assert_eq!(resolve("${env:KAFKA_PW}", &env).unwrap(), "s3cret");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "line one\nline two\n").unwrap();
        let got = resolve(&format!("${{file:{}}}", f.display()), &[]).unwrap();
        assert_eq!(got, "line one\nline two", "only the last newline goes");
    }

    #[test]
    fn bad_references_name_what_is_missing_never_a_value() {
        let err = parse("${flie:/x}").unwrap_err();
        assert!(err.contains("${file:PATH}"), "{err}");
        let err = resolve("${env:NOPE_NOT_SET}", &[]).unwrap_err();
        assert!(err.contains("NOPE_NOT_SET"), "{err}");
        let err = resolve("${file:/nonexistent/pw}", &[]).unwrap_err();
        assert!(err.contains("/nonexistent/pw"), "{err}");
    }
}
