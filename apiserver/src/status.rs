//! API errors as Kubernetes `Status` objects (kind Status, apiVersion v1).
//!
//! Messages follow the wording of the real API server so that clients which match on them
//! (kubectl, client libraries) behave the same.

use serde_json::{Value, json};

/// An error answered to an HTTP client as a `Status` body with the same HTTP code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` (boxed: it is rare and the error travels in every `Result`).
    pub details: Option<Box<Details>>,
    /// `details.retryAfterSeconds` and the `Retry-After` header (429); 0 for none (a plain `u32`
    /// keeps the error small).
    pub retry_after_seconds: u32,
}

/// Result of request handling.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after_seconds: 0,
        }
    }

    fn with_details(mut self, name: &str, group: &str, kind: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            causes: Vec::new(),
        }));
        self
    }

    /// 404 for an object of `resource` (plural) in `group`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .with_details(name, group, resource)
    }

    /// 404 for a URL that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(name, group, resource)
    }

    /// 409 Conflict: stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = qualified(group, resource);
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        )
        .with_details(name, group, resource)
    }

    /// 409 Conflict for an update with a stale resourceVersion.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid: `kind` is the object's Kind, as in Kubernetes.
    pub fn invalid(group: &str, kind: &str, name: &str, field_error: impl Into<String>) -> Self {
        let field_error = field_error.into();
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field_error}"),
        )
        .with_details(name, group, kind)
    }

    /// 422 Invalid for one field error, with its `details.causes` entry as kube-apiserver gives it:
    /// `type` is the error type as it reads in the message ("Forbidden", "Required value", ...).
    pub fn field_invalid(
        group: &str,
        kind: &str,
        name: &str,
        field: &str,
        type_: &str,
        detail: &str,
    ) -> Self {
        let message = if detail.is_empty() {
            type_.to_string()
        } else {
            format!("{type_}: {detail}")
        };
        let mut error = Self::invalid(group, kind, name, format!("{field}: {message}"));
        if let Some(details) = error.details.as_mut() {
            details.causes.push(json!({
                "reason": cause_reason(type_),
                "message": message,
                "field": field,
            }));
        }
        error
    }

    /// 422 Invalid for a list of field errors, as apimachinery's `errors.NewInvalid`: the
    /// message names the qualified kind and joins the distinct errors (`[a, b]` for several);
    /// `details.causes` holds one entry per error.
    pub fn invalid_fields(
        group: &str,
        kind: &str,
        name: &str,
        errors: &[crate::pod_update::FieldError],
    ) -> Self {
        let body = |e: &crate::pod_update::FieldError| {
            if e.detail.is_empty() {
                e.type_.to_string()
            } else {
                format!("{}: {}", e.type_, e.detail)
            }
        };
        let mut seen: Vec<String> = Vec::new();
        for e in errors {
            let text = format!("{}: {}", e.field, body(e));
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
        let joined = match seen.len() {
            1 => seen.remove(0),
            _ => format!("[{}]", seen.join(", ")),
        };
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {joined}"),
        )
        .with_details(name, group, kind);
        if let Some(details) = error.details.as_mut() {
            for e in errors {
                let mut cause = json!({ "reason": cause_reason(e.type_), "message": body(e) });
                if !e.field.is_empty() {
                    cause["field"] = json!(e.field);
                }
                details.causes.push(cause);
            }
        }
        error
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 500 with kube-apiserver's `InternalError` reason.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// An error a kubelet answered with (its HTTP status and body text), as kube-apiserver
    /// passes it on.
    pub fn from_kubelet(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            _ => "InternalError",
        };
        Self::new(code, reason, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 410 Expired: a resourceVersion older than the kept watch history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500 InternalError, injected by a fault rule.
    pub fn injected_internal_error() -> Self {
        Self::new(
            500,
            "InternalError",
            "Internal error occurred: injected fault (vcsync embedded API server)",
        )
    }

    /// 403 Forbidden from an admission webhook, injected by a fault rule.
    pub fn denied_by_webhook(message: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("admission webhook \"policy.example\" denied the request: {message}"),
        )
    }

    /// 429 TooManyRequests, injected by a fault rule; the body carries `details.retryAfterSeconds`
    /// (the HTTP `Retry-After` header is added by the HTTP layer).
    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later. (injected fault)",
        );
        e.retry_after_seconds = retry_after_seconds.max(1);
        e
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(found) = &self.details {
            let mut details = json!({ "name": found.name, "kind": found.kind });
            if !found.group.is_empty() {
                details["group"] = json!(found.group);
            }
            if !found.causes.is_empty() {
                details["causes"] = json!(found.causes);
            }
            status["details"] = details;
        }
        if self.retry_after_seconds > 0 {
            status["details"]["retryAfterSeconds"] = json!(self.retry_after_seconds);
        }
        status
    }
}

/// `details` of a `Status`.
#[derive(Debug, Clone)]
pub(crate) struct Details {
    pub name: String,
    pub group: String,
    /// The resource plural, or the Kind for Invalid.
    pub kind: String,
    /// `details.causes`: `{reason, message, field}` objects.
    pub causes: Vec<Value>,
}

/// The `reason` of a cause for a field error type as it reads in messages (k8s.io/apimachinery's
/// `field.ErrorType`).
fn cause_reason(type_: &str) -> &'static str {
    match type_ {
        "Not found" => "FieldValueNotFound",
        "Required value" => "FieldValueRequired",
        "Duplicate value" => "FieldValueDuplicate",
        "Forbidden" => "FieldValueForbidden",
        "Too long" => "FieldValueTooLong",
        "Too many" => "FieldValueTooMany",
        "Unsupported value" => "FieldValueNotSupported",
        _ => "FieldValueInvalid",
    }
}

/// A `Status` with status Success, as returned by some deletes and by bindings.
pub(crate) fn success(code: u16, details: Option<(&str, &str, &str)>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": code,
    });
    if let Some((name, group, kind)) = details {
        status["details"] = json!({ "name": name, "group": group, "kind": kind });
    }
    status
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}
