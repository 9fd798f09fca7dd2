//! A builder for producers and tests.

use uuid::Uuid;

use crate::event::empty_object;
use crate::{
    AgentInfo, Decision, EventCategory, EventType, IndicatorType, Labels, Outcome, ResourceInfo,
    ResourceType, SCHEMA_VERSION, SecurityEvent, SessionInfo, Severity, ThreatIndicator,
    ThreatInfo, Timestamp, ValidationError,
};

/// Builds a [`SecurityEvent`] with hushd's conventions as defaults.
///
/// Defaults: a fresh UUID v7 id, the current time, schema `1.0.0`, agent `hushd`/`clawdstrike`,
/// guard `engine`, severity `info`, allowed, and `outcome` derived from `allowed` (`success` or
/// `failure`) unless set. [`build`](Self::build) validates.
///
/// ```
/// use clawdstrike_schema::{EventType, ResourceType, SecurityEvent, Severity};
///
/// let event = SecurityEvent::builder(EventType::ForbiddenPath)
///     .agent_id("agent-7")
///     .session_id("sess-123")
///     .action("file_access")
///     .denied("forbidden_path", Severity::Critical, "Access to forbidden path: /etc/shadow")
///     .resource(ResourceType::File, "/etc/shadow")
///     .label("team", "security")
///     .build()
///     .unwrap();
/// assert_eq!(event.outcome.as_str(), "failure");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SecurityEventBuilder {
    event: SecurityEvent,
    outcome_set: bool,
}

impl SecurityEvent {
    /// Starts a builder for an event of the given type (see [`SecurityEventBuilder`]).
    pub fn builder(event_type: EventType) -> SecurityEventBuilder {
        SecurityEventBuilder::new(event_type)
    }
}

/// The category hushd gives an event type when the producer sets none.
fn default_category(event_type: EventType) -> EventCategory {
    match event_type {
        EventType::EgressBlocked => EventCategory::Network,
        EventType::ForbiddenPath | EventType::PatchRejected | EventType::SecretDetected => {
            EventCategory::File
        }
        EventType::SessionStart | EventType::SessionEnd => EventCategory::Session,
        _ => EventCategory::Authorization,
    }
}

impl SecurityEventBuilder {
    /// A builder with the defaults described on the type.
    pub fn new(event_type: EventType) -> Self {
        Self {
            event: SecurityEvent {
                schema_version: SCHEMA_VERSION.to_owned(),
                event_id: Uuid::now_v7(),
                event_type,
                event_category: default_category(event_type),
                timestamp: Timestamp::now(),
                ingested_at: None,
                agent: AgentInfo {
                    id: String::new(),
                    name: "hushd".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    agent_type: "clawdstrike".to_owned(),
                },
                session: SessionInfo::default(),
                outcome: Outcome::Success,
                action: String::new(),
                threat: ThreatInfo::default(),
                decision: Decision {
                    allowed: true,
                    guard: "engine".to_owned(),
                    severity: Severity::Info,
                    reason: String::new(),
                    policy_hash: None,
                    ruleset: None,
                },
                resource: ResourceInfo::default(),
                metadata: empty_object(),
                labels: Labels::new(),
            },
            outcome_set: false,
        }
    }

    /// Sets the event id (default: a fresh UUID v7).
    pub fn event_id(mut self, id: Uuid) -> Self {
        self.event.event_id = id;
        self
    }

    /// Sets the category (default: derived from the event type).
    pub fn category(mut self, category: EventCategory) -> Self {
        self.event.event_category = category;
        self
    }

    /// Sets the timestamp (default: now).
    pub fn timestamp(mut self, timestamp: Timestamp) -> Self {
        self.event.timestamp = timestamp;
        self
    }

    /// Sets the ingestion time.
    pub fn ingested_at(mut self, timestamp: Timestamp) -> Self {
        self.event.ingested_at = Some(timestamp);
        self
    }

    /// Sets the agent id (required).
    pub fn agent_id(mut self, id: impl Into<String>) -> Self {
        self.event.agent.id = id.into();
        self
    }

    /// Sets the whole agent.
    pub fn agent(mut self, agent: AgentInfo) -> Self {
        self.event.agent = agent;
        self
    }

    /// Sets the session id (required).
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.event.session.id = id.into();
        self
    }

    /// Sets the whole session.
    pub fn session(mut self, session: SessionInfo) -> Self {
        self.event.session = session;
        self
    }

    /// Sets the session's tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.event.session.tenant_id = Some(tenant.into());
        self
    }

    /// Sets the session's environment.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.event.session.environment = Some(environment.into());
        self
    }

    /// Sets the session's user.
    pub fn user_id(mut self, user: impl Into<String>) -> Self {
        self.event.session.user_id = Some(user.into());
        self
    }

    /// Sets the action kind (required), e.g. `file_access`.
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.event.action = action.into();
        self
    }

    /// Sets the outcome explicitly (default: derived from `allowed`).
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.event.outcome = outcome;
        self.outcome_set = true;
        self
    }

    /// An allowing decision by `guard`.
    pub fn allowed(
        self,
        guard: impl Into<String>,
        severity: Severity,
        reason: impl Into<String>,
    ) -> Self {
        self.decision(true, guard, severity, reason)
    }

    /// A denying decision by `guard`.
    pub fn denied(
        self,
        guard: impl Into<String>,
        severity: Severity,
        reason: impl Into<String>,
    ) -> Self {
        self.decision(false, guard, severity, reason)
    }

    fn decision(
        mut self,
        allowed: bool,
        guard: impl Into<String>,
        severity: Severity,
        reason: impl Into<String>,
    ) -> Self {
        let decision = &mut self.event.decision;
        decision.allowed = allowed;
        decision.guard = guard.into();
        decision.severity = severity;
        decision.reason = reason.into();
        self
    }

    /// Sets the policy hash and ruleset of the decision.
    pub fn policy(mut self, policy_hash: impl Into<String>, ruleset: impl Into<String>) -> Self {
        self.event.decision.policy_hash = Some(policy_hash.into());
        self.event.decision.ruleset = Some(ruleset.into());
        self
    }

    /// Sets the resource's type and name (name required).
    pub fn resource(mut self, resource_type: ResourceType, name: impl Into<String>) -> Self {
        self.event.resource.resource_type = resource_type;
        self.event.resource.name = name.into();
        self
    }

    /// Sets the resource's path.
    pub fn resource_path(mut self, path: impl Into<String>) -> Self {
        self.event.resource.path = Some(path.into());
        self
    }

    /// Sets the resource's host and port.
    pub fn resource_host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.event.resource.host = Some(host.into());
        self.event.resource.port = Some(port);
        self
    }

    /// Sets the threat indicator.
    pub fn indicator(mut self, indicator_type: IndicatorType, value: impl Into<String>) -> Self {
        self.event.threat.indicator = Some(ThreatIndicator {
            indicator_type,
            value: value.into(),
        });
        self
    }

    /// Sets the MITRE ATT&CK tactic and technique.
    pub fn mitre(mut self, tactic: impl Into<String>, technique: impl Into<String>) -> Self {
        self.event.threat.tactic = Some(tactic.into());
        self.event.threat.technique = Some(technique.into());
        self
    }

    /// Sets the metadata (any JSON).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.event.metadata = metadata;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.labels.insert(key, value);
        self
    }

    /// Validates and returns the event.
    ///
    /// # Errors
    /// A [`ValidationError`] naming every required field left blank.
    pub fn build(mut self) -> Result<SecurityEvent, ValidationError> {
        if !self.outcome_set {
            self.event.outcome = if self.event.decision.allowed {
                Outcome::Success
            } else {
                Outcome::Failure
            };
        }
        self.event.validate()?;
        Ok(self.event)
    }
}
