//! Field errors as k8s.io/apimachinery's `field.Error` renders them (pkg/util/validation/field/
//! errors.go: `ErrorBody`), and the string checks of pkg/util/validation/validation.go and
//! pkg/api/validate/content (DNS labels and subdomains, qualified names, label values, port
//! names, config keys) with their exact messages.

use serde_json::Value;

pub(crate) use crate::pod_update::FieldError;

/// A list of field errors, in the order kube-apiserver reports them.
pub(crate) type Errors = Vec<FieldError>;

fn error(field: &str, type_: &'static str, detail: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        type_,
        detail,
    }
}

/// `value` as `ErrorBody` prints a bad value: strings quoted as Go's `%q`, numbers and booleans
/// plainly, anything else as JSON.
pub(crate) fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        other => other.to_string(),
    }
}

/// Go's `strconv.Quote` for the strings that occur in practice.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn with_value(value: &Value, detail: &str) -> String {
    if detail.is_empty() {
        go_value(value)
    } else {
        format!("{}: {detail}", go_value(value))
    }
}

/// `field.Required`.
pub(crate) fn required(field: &str, detail: &str) -> FieldError {
    error(field, "Required value", detail.to_string())
}

/// `field.Forbidden`.
pub(crate) fn forbidden(field: &str, detail: &str) -> FieldError {
    error(field, "Forbidden", detail.to_string())
}

/// `field.Invalid`.
pub(crate) fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
    error(field, "Invalid value", with_value(value, detail))
}

/// `field.Invalid` of a string value.
pub(crate) fn invalid_str(field: &str, value: &str, detail: &str) -> FieldError {
    invalid(field, &Value::String(value.to_string()), detail)
}

/// `field.Duplicate`.
pub(crate) fn duplicate(field: &str, value: &Value) -> FieldError {
    error(field, "Duplicate value", go_value(value))
}

/// `field.NotSupported` with the supported values (sorted as kube-apiserver lists them).
pub(crate) fn not_supported(field: &str, value: &Value, supported: &[&str]) -> FieldError {
    let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
    let detail = format!("supported values: {}", quoted.join(", "));
    error(field, "Unsupported value", with_value(value, &detail))
}

/// `field.TooLong` (the value is never shown).
pub(crate) fn too_long(field: &str, max: usize) -> FieldError {
    let unit = if max == 1 { "byte" } else { "bytes" };
    error(field, "Too long", format!("may not be more than {max} {unit}"))
}

/// The string at `value`, "" when missing or not a string.
pub(crate) fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The list at `value`, empty when missing.
pub(crate) fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A required enum field: Required when empty, NotSupported when not one of `supported`.
pub(crate) fn check_enum(errors: &mut Errors, field: &str, value: &Value, supported: &[&str]) {
    match value.as_str() {
        None | Some("") => errors.push(required(field, "")),
        Some(s) if supported.contains(&s) => {}
        Some(_) => errors.push(not_supported(field, value, supported)),
    }
}

/// An optional enum field: NotSupported when set and not one of `supported`.
pub(crate) fn check_optional_enum(errors: &mut Errors, field: &str, value: &Value, supported: &[&str]) {
    if value.as_str().is_some_and(|s| !supported.contains(&s)) {
        errors.push(not_supported(field, value, supported));
    }
}

/// Appends one Invalid error per message.
pub(crate) fn push_invalid(errors: &mut Errors, field: &str, value: &str, messages: Vec<String>) {
    errors.extend(messages.iter().map(|m| invalid_str(field, value, m)));
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
start and end with an alphanumeric character";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// `validation.RegexError`.
pub(crate) fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        examples.join(" or ")
    )
}

/// `validation.MaxLenError`.
pub(crate) fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn label_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn subdomain_pattern(s: &str) -> bool {
    s.split('.').all(label_pattern)
}

/// `IsDNS1123Label`.
pub(crate) fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !label_pattern(value) {
        if subdomain_pattern(value) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub(crate) fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !subdomain_pattern(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            &format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*"),
            &["example.com"],
        ));
    }
    errs
}

fn label_key_name_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `IsQualifiedName` (label keys, annotation keys lowercased).
pub(crate) fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !label_key_name_pattern(name) {
        errs.push(format!(
            "name part {}",
            regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub(crate) fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !label_key_name_pattern(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
             or '.', and must start and end with an alphanumeric character",
            &format!("({LABEL_KEY_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortName`.
pub(crate) fn port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty()
        || !port
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// `IsValidPortNum`.
pub(crate) fn port_number(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// `IsConfigMapKey` (data keys of ConfigMaps and Secrets).
pub(crate) fn config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    match value {
        "." => errs.push("must not be '.'".to_string()),
        ".." => errs.push("must not be '..'".to_string()),
        v if v.starts_with("..") => errs.push("must not start with '..'".to_string()),
        _ => {}
    }
    errs
}

/// `ValidateLabels`: keys as qualified names, values as label values; errors at `field`.
pub(crate) fn labels(errors: &mut Errors, field: &str, labels: &Value) {
    let Some(labels) = labels.as_object() else {
        return;
    };
    for (key, value) in labels {
        push_invalid(errors, field, key, qualified_name(key));
        let value = str_of(value);
        push_invalid(errors, field, value, label_value(value));
    }
}

/// A string that must be a DNS-1123 label (`ValidateDNS1123Label`).
pub(crate) fn check_label(errors: &mut Errors, field: &str, value: &str) {
    push_invalid(errors, field, value, dns1123_label(value));
}

/// A string that must be a DNS-1123 subdomain (`ValidateDNS1123Subdomain`).
pub(crate) fn check_subdomain(errors: &mut Errors, field: &str, value: &str) {
    push_invalid(errors, field, value, dns1123_subdomain(value));
}

/// A string that must be a qualified name (`ValidateQualifiedName`).
pub(crate) fn check_qualified_name(errors: &mut Errors, field: &str, value: &str) {
    push_invalid(errors, field, value, qualified_name(value));
}

/// A non-negative integer field (`ValidateNonnegativeField`).
pub(crate) fn check_nonnegative(errors: &mut Errors, field: &str, value: &Value) {
    if value.as_i64().is_some_and(|v| v < 0) {
        errors.push(invalid(field, value, "must be greater than or equal to 0"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_as_error_body_renders_them() {
        let e = invalid("a", &json!("x\"y"), "bad");
        assert_eq!((e.type_, e.detail.as_str()), ("Invalid value", "\"x\\\"y\": bad"));
        let e = not_supported("a", &json!("X"), &["A", "B"]);
        assert_eq!(e.detail, "\"X\": supported values: \"A\", \"B\"");
        assert_eq!(too_long("a", 262144).detail, "may not be more than 262144 bytes");
        assert_eq!(invalid("a", &json!(70000), "").detail, "70000");
    }

    #[test]
    fn names_and_keys() {
        assert!(dns1123_label("a-1").is_empty());
        assert_eq!(dns1123_label("a.b"), vec!["must not contain dots"]);
        assert!(dns1123_subdomain("a.b-c").is_empty());
        assert_eq!(dns1123_subdomain("A").len(), 1);
        assert!(qualified_name("example.com/My_name").is_empty());
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert_eq!(qualified_name("/a"), vec!["prefix part must be non-empty"]);
        assert!(label_value("").is_empty());
        assert_eq!(label_value("-a").len(), 1);
        assert!(port_name("http").is_empty());
        assert_eq!(port_name("80").len(), 1);
        assert_eq!(config_map_key("..a"), vec!["must not start with '..'"]);
        assert_eq!(
            dns1123_label("A_b")[0],
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
    }
}
