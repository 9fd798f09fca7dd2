//! Validation: what must hold for an event to be shipped.

use std::fmt;

use crate::SecurityEvent;

/// One problem found by [`SecurityEvent::validate`], naming the field by its wire path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    /// Dotted wire path of the field, e.g. `agent.id`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A required string is empty or only white space.
    Blank,
}

impl fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::Blank => write!(f, "`{}` is required and must not be blank", self.field),
        }
    }
}

/// The error of [`SecurityEvent::validate`]: every problem found, never just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    issues: Vec<FieldIssue>,
}

impl ValidationError {
    /// Every problem, in wire order. Never empty.
    pub fn issues(&self) -> &[FieldIssue] {
        &self.issues
    }

    /// The wire paths of the offending fields.
    pub fn fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.issues.iter().map(|i| i.field)
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// True for an empty or white-space-only string.
pub(crate) fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

impl SecurityEvent {
    /// Checks the rules of schema 1.0.0 that types alone cannot express: `schema_version`,
    /// `action`, `agent.id`, `session.id` and `resource.name` are required and non-blank.
    ///
    /// # Errors
    /// A [`ValidationError`] listing every offending field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let required: [(&'static str, &str); 5] = [
            ("schema_version", &self.schema_version),
            ("agent.id", &self.agent.id),
            ("session.id", &self.session.id),
            ("action", &self.action),
            ("resource.name", &self.resource.name),
        ];
        let issues: Vec<FieldIssue> = required
            .into_iter()
            .filter(|(_, value)| is_blank(value))
            .map(|(field, _)| FieldIssue {
                field,
                problem: Problem::Blank,
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { issues })
        }
    }
}
