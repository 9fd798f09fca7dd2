//! The per-exporter event filter, compiled from [`FilterConfig`].

use clawdstrike_schema::{EventType, SecurityEvent, Severity};

use crate::config::FilterConfig;

#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pass_all: bool,
    min_severity: Option<Severity>,
    include_types: Vec<EventType>,
    exclude_types: Vec<EventType>,
    include_guards: Vec<String>,
    exclude_guards: Vec<String>,
}

impl Filter {
    pub(crate) fn new(config: &FilterConfig) -> Self {
        Self {
            pass_all: config.is_empty(),
            min_severity: config.min_severity,
            include_types: config.include_event_types.clone(),
            exclude_types: config.exclude_event_types.clone(),
            include_guards: config.include_guards.clone(),
            exclude_guards: config.exclude_guards.clone(),
        }
    }

    /// True when `event` is for this exporter.
    pub(crate) fn accepts(&self, event: &SecurityEvent) -> bool {
        if self.pass_all {
            return true;
        }
        if self
            .min_severity
            .is_some_and(|min| event.decision.severity < min)
        {
            return false;
        }
        if !self.include_types.is_empty() && !self.include_types.contains(&event.event_type) {
            return false;
        }
        if self.exclude_types.contains(&event.event_type) {
            return false;
        }
        let guard = event.decision.guard.as_str();
        if !self.include_guards.is_empty() && !self.include_guards.iter().any(|g| g == guard) {
            return false;
        }
        !self.exclude_guards.iter().any(|g| g == guard)
    }
}
