//! API errors rendered as `metav1.Status` objects, the body every Kubernetes client decodes.

use serde_json::{Value, json};

/// One cause of a `422 Invalid`, pointing at the field to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// The field path, e.g. `spec.ports[1].nodePort`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An API error: HTTP code, Status reason and message, as the real server words them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Name and kind for `details`.
    pub details: Option<Box<(String, String)>>,
    /// `details.group` (the API group of the resource, when not core).
    pub group: String,
    /// Whether `details` is rendered even without name, kind or causes (`{}`), as the real
    /// server does for patch errors.
    pub empty_details: bool,
    /// Field causes (for `Invalid`).
    pub causes: Vec<Cause>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: None,
            group: String::new(),
            empty_details: false,
            causes: Vec::new(),
        }
    }

    /// `409 Conflict` of a server-side apply, with the conflicting fields as causes.
    pub fn conflict_apply(message: String) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// `422` for a JSON patch that cannot be applied (a failed `test`, a missing path): the
    /// real server says no more than this.
    pub fn patch_rejected() -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
        );
        e.empty_details = true;
        e
    }

    /// Sets `details.group` (for resources outside the core group).
    pub fn in_group(mut self, group: &str) -> Self {
        self.group = group.to_string();
        // `details.kind` is the resource without its group (`daemonsets`, group `apps`).
        if let Some((_, kind)) = self.details.as_deref_mut()
            && !group.is_empty()
            && let Some(plain) = kind.strip_suffix(&format!(".{group}"))
        {
            *kind = plain.to_string();
        }
        self
    }

    /// `404 NotFound` for `<resource> "<name>" not found`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"));
        e.details = Some(Box::new((name.to_string(), resource.to_string())));
        e
    }

    /// `404` for a path no resource is served at (the real server's generic answer).
    pub fn no_resource() -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
        e.empty_details = true;
        e
    }

    /// `409 AlreadyExists`.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        );
        e.details = Some(Box::new((name.to_string(), resource.to_string())));
        e
    }

    /// `409 Conflict` for a stale resourceVersion.
    pub fn conflict(resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        );
        e.details = Some(Box::new((name.to_string(), resource.to_string())));
        e
    }

    /// `422 Invalid` with field causes.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        // An aggregate of several errors prints as a list (apimachinery's utilerrors).
        let joined = if list.len() > 1 {
            format!("[{}]", list.join(", "))
        } else {
            list.join(", ")
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {joined}"),
        );
        // `DaemonSet.apps` in the message is kind `DaemonSet`, group `apps` in details.
        let (plain, group) = kind.split_once('.').unwrap_or((kind, ""));
        e.details = Some(Box::new((name.to_string(), plain.to_string())));
        e.group = group.to_string();
        e.causes = causes;
        e
    }

    /// `422` for a patch that cannot be applied.
    pub fn unprocessable(message: String) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// `401 Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// `403 Forbidden` as the RBAC authorizer words it.
    pub fn forbidden(message: String) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// `405 MethodNotAllowed`.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        );
        e.empty_details = true;
        e
    }

    /// `410 Expired` for a watch from a resourceVersion older than the history.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// `410 Expired` for a list at a resourceVersion that was compacted away.
    pub fn gone_list(requested: u64, compacted: u64) -> Self {
        Self::new(410, "Expired", {
            let _ = (requested, compacted);
            "The resourceVersion for the provided list is too old.".to_string()
        })
    }

    /// `415` for a PATCH of an unknown patch type (the real server says no more).
    pub fn unsupported_media() -> Self {
        let mut e = Self::new(
            415,
            "UnsupportedMediaType",
            "415: Unsupported Media Type".into(),
        );
        e.empty_details = true;
        e
    }

    /// `415` for a strategic merge patch of a custom resource, which has no patch strategies.
    pub fn unsupported_custom_patch() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
        )
    }

    /// `415` for a create or update body in a media type the server does not decode.
    pub fn unsupported_body_media() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf".into(),
        )
    }

    /// `500 InternalError`, used by fault injection.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if self.details.is_some() || !self.causes.is_empty() || self.empty_details {
            let mut d = json!({});
            if let Some((name, kind)) = self.details.as_deref() {
                if !name.is_empty() {
                    d["name"] = json!(name);
                }
                if !self.group.is_empty() {
                    d["group"] = json!(self.group);
                }
                d["kind"] = json!(kind);
            }
            if !self.causes.is_empty() {
                d["causes"] = self
                    .causes
                    .iter()
                    .map(|c| {
                        let mut o = json!({"reason": c.reason, "message": c.message});
                        if !c.field.is_empty() {
                            o["field"] = json!(c.field);
                        }
                        o
                    })
                    .collect();
            }
            s["details"] = d;
        }
        s
    }
}
