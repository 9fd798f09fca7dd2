//! Decoding one JSON document into a validated [`SecurityEvent`], with errors that name the field.

use std::fmt;

use crate::{SecurityEvent, ValidationError};

/// Why a JSON document is not a valid [`SecurityEvent`].
///
/// Every variant says what and where: the field's wire path (`resource.port`) where there is one,
/// the column for syntax errors. The raw input is kept by the caller (see
/// [`crate::RejectedLine`]), never by the error, so errors stay small.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not UTF-8.
    #[error("invalid UTF-8 at byte {valid_up_to} of the input")]
    InvalidUtf8 {
        /// Length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// The input is not JSON at all (or is truncated).
    #[error("not valid JSON at column {column}: {message}")]
    Syntax {
        /// 1-based column (byte) where the parser stopped.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The input is JSON but not an object.
    #[error("expected a JSON object (one event), found {found}")]
    NotAnObject {
        /// What was found instead (`an array`, `a string`, ...).
        found: &'static str,
    },
    /// A field is missing, has the wrong JSON type, or an unknown or out-of-range value.
    #[error("field `{field}`: {message}")]
    Field {
        /// Dotted wire path of the field, e.g. `decision.severity`.
        field: String,
        /// What is wrong, e.g. ``unknown variant `apocalyptic`, expected one of ...``.
        message: String,
    },
    /// The event decoded but breaks a rule of the schema (a required field is blank).
    #[error("invalid event: {0}")]
    Invalid(#[from] ValidationError),
    /// The line is longer than the configured maximum.
    #[error("line is {len} bytes long, over the maximum of {max} bytes")]
    TooLong {
        /// The line's full length in bytes (without its line ending).
        len: u64,
        /// The configured maximum.
        max: usize,
    },
}

impl DecodeError {
    /// The wire paths of the fields this error is about (empty for syntax errors).
    pub fn fields(&self) -> Vec<String> {
        match self {
            DecodeError::Field { field, .. } => vec![field.clone()],
            DecodeError::Invalid(v) => v.fields().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

/// Strips serde_json's " at line L column C" suffix: our callers report their own position.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Explains a failed decode precisely. Only runs on the error path, so the fast path pays
/// nothing for path tracking.
fn explain(bytes: &[u8], fast_error: &serde_json::Error) -> DecodeError {
    if fast_error.is_syntax() || fast_error.is_eof() {
        return DecodeError::Syntax {
            column: fast_error.column(),
            message: strip_position(&fast_error.to_string()),
        };
    }
    // Well-formed JSON of the wrong shape: first, is it an object at all?
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && !value.is_object()
    {
        return DecodeError::NotAnObject {
            found: json_kind(&value),
        };
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, SecurityEvent>(&mut de) {
        Ok(_) => DecodeError::Syntax {
            column: fast_error.column(),
            message: strip_position(&fast_error.to_string()),
        },
        Err(err) => {
            let path = err.path().to_string();
            let message = strip_position(&err.inner().to_string());
            // `missing field `x`` is reported at the parent: name the field itself.
            let field = match message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                Some(missing) if path == "." => missing.to_owned(),
                Some(missing) => format!("{path}.{missing}"),
                None => path,
            };
            DecodeError::Field { field, message }
        }
    }
}

/// Decodes and validates one event from JSON bytes.
///
/// Unknown fields are ignored (forward compatibility); unknown enum values are errors naming the
/// field (see the crate docs for why).
///
/// # Errors
/// A [`DecodeError`] naming the field, or the column for non-JSON input.
pub fn decode_event(bytes: &[u8]) -> Result<SecurityEvent, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let event: SecurityEvent = match serde_json::from_str(text) {
        Ok(event) => event,
        Err(e) => return Err(explain(bytes, &e)),
    };
    event.validate()?;
    Ok(event)
}

impl SecurityEvent {
    /// Decodes and validates one event from a JSON string. See [`decode_event`].
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field.
    pub fn from_json(json: &str) -> Result<Self, DecodeError> {
        decode_event(json.as_bytes())
    }
}

impl fmt::Display for SecurityEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} [{}] {} {}: {}",
            self.event_id,
            self.event_type,
            self.decision.guard,
            self.decision.severity,
            if self.decision.allowed {
                "ALLOWED"
            } else {
                "BLOCKED"
            },
            self.decision.reason
        )
    }
}
