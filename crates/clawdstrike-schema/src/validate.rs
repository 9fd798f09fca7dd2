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
    /// `schema_version` names another major version than 1 (or is not a version at all):
    /// its fields may mean something else than this crate decodes them as.
    UnsupportedVersion,
}

impl fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::Blank => write!(f, "`{}` is required and must not be blank", self.field),
            Problem::UnsupportedVersion => write!(
                f,
                "`{}` must be a version 1.x (this decoder reads schema {}; a new major version may change what fields mean)",
                self.field,
                crate::SCHEMA_VERSION
            ),
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

/// True for `1`, `1.0.0`, `1.4`, `1.2.3-rc.1`: a version whose major number is 1.
fn is_major_one(version: &str) -> bool {
    let mut parts = version.trim().splitn(2, '.');
    parts.next() == Some("1")
        && parts
            .next()
            .is_none_or(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// True for an empty or white-space-only string.
pub(crate) fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

impl SecurityEvent {
    /// Checks the rules of schema 1.0.0 that types alone cannot express: `schema_version`,
    /// `action`, `agent.id`, `session.id` and `resource.name` are required and non-blank, and
    /// `schema_version` is of major version 1 (`1.0.0`, or a later `1.x` that only adds fields
    /// and values).
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
        let mut issues: Vec<FieldIssue> = required
            .into_iter()
            .filter(|(_, value)| is_blank(value))
            .map(|(field, _)| FieldIssue {
                field,
                problem: Problem::Blank,
            })
            .collect();
        if !is_blank(&self.schema_version) && !is_major_one(&self.schema_version) {
            issues.insert(
                0,
                FieldIssue {
                    field: "schema_version",
                    problem: Problem::UnsupportedVersion,
                },
            );
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { issues })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_versions_of_major_one_are_accepted_and_others_rejected() {
        for ok in ["1.0.0", "1.1.0", "1.4", "1", " 1.0.0 ", "1.2.3-rc.1"] {
            assert!(is_major_one(ok), "{ok}");
        }
        for bad in [
            "2.0.0", "0.9", "10.0.0", "1x", "1.", "v1.0.0", "banana", "1.beta",
        ] {
            assert!(!is_major_one(bad), "{bad}");
        }
        let mut event = SecurityEvent::builder(crate::EventType::GuardBlock)
            .agent_id("agent-1")
            .session_id("session-1")
            .action("egress")
            .resource(crate::ResourceType::Network, "example.com")
            .build()
            .unwrap();
        event.schema_version = "2.0.0".into();
        let err = event.validate().unwrap_err();
        assert_eq!(
            err.issues(),
            [FieldIssue {
                field: "schema_version",
                problem: Problem::UnsupportedVersion
            }]
        );
        assert!(err.to_string().contains("1.x"), "{err}");
    }
}
