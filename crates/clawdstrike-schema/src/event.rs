//! The event types, with serde attributes giving the exact wire names of schema 1.0.0.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Labels, Timestamp};

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// One decision of Clawdstrike's policy engine, as its daemon (`hushd`) emits it.
///
/// Field order and names are the wire format. Build one with [`SecurityEvent::builder`];
/// decode one with [`SecurityEvent::from_json`] or [`crate::NdjsonReader`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecurityEvent {
    /// Schema version, `"1.0.0"` today. Required, non-blank.
    pub schema_version: String,
    /// Unique id; hushd uses UUID v7 (time-ordered).
    pub event_id: Uuid,
    /// What kind of event this is.
    pub event_type: EventType,
    /// The broad category of the event.
    pub event_category: EventCategory,
    /// When the decision was made (RFC 3339, UTC, up to nanoseconds).
    pub timestamp: Timestamp,
    /// When a collector ingested the event, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at: Option<Timestamp>,
    /// The agent (daemon) that made the decision.
    pub agent: AgentInfo,
    /// The AI-agent session the decision belongs to.
    pub session: SessionInfo,
    /// `success` when the action was allowed, else `failure` (hushd's convention).
    pub outcome: Outcome,
    /// The action kind: `file_access`, `file_write`, `egress`, `shell`, `mcp_tool`, `patch`, ...
    pub action: String,
    /// Threat intelligence about the decision; `{}` when there is none.
    #[serde(default)]
    pub threat: ThreatInfo,
    /// The policy decision itself.
    pub decision: Decision,
    /// The resource the action touched.
    pub resource: ResourceInfo,
    /// Guard-specific details; any JSON, `{}` by default. May be large and nested.
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    /// User labels such as `team: security`.
    #[serde(default)]
    pub labels: Labels,
}

pub(crate) fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The agent (daemon) that emitted the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Agent id. Required, non-blank.
    pub id: String,
    /// Agent name, `hushd` for Clawdstrike's daemon.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Agent type, always `clawdstrike` from hushd.
    #[serde(rename = "type")]
    pub agent_type: String,
}

/// The AI-agent session an event belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id. Required, non-blank.
    pub id: String,
    /// The user on whose behalf the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The tenant (customer, organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The deployment environment (`production`, `staging`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// Threat intelligence attached to a decision. Every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreatInfo {
    /// The indicator that triggered the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator: Option<ThreatIndicator>,
    /// MITRE ATT&CK tactic id, e.g. `TA0001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tactic: Option<String>,
    /// MITRE ATT&CK technique id, e.g. `T1566`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub technique: Option<String>,
}

impl ThreatInfo {
    /// True when no part of the threat is set (it serialises as `{}`).
    pub fn is_empty(&self) -> bool {
        self.indicator.is_none() && self.tactic.is_none() && self.technique.is_none()
    }
}

/// A threat indicator: what matched, and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreatIndicator {
    /// The indicator's kind.
    #[serde(rename = "type")]
    pub indicator_type: IndicatorType,
    /// The indicator's value (a domain, a path, a pattern).
    pub value: String,
}

/// The policy decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the action was allowed.
    pub allowed: bool,
    /// The guard that decided, or `engine` when no guard did.
    pub guard: String,
    /// How severe the decision is.
    pub severity: Severity,
    /// Human-readable reason.
    pub reason: String,
    /// Hash of the policy in force (`0x` + sha256 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The ruleset name (`Default`, `Strict`, `AI Agent`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
}

/// The resource an action touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// The resource's kind.
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// Its name (a path, a host, a command line, a tool name). Required, non-blank.
    pub name: String,
    /// Filesystem path, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Host, for network resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port, for network resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Defines a closed wire enum: variants, their wire names, `as_str`, `ALL` and `Display`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The wire name (snake_case), e.g. for tags and facets.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $wire, )+ }
            }

            /// Parses a wire name; `None` for anything this schema version does not know.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s { $( $wire => Some($name::$variant), )+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// What kind of event this is.
    EventType {
        /// A policy was violated.
        PolicyViolation => "policy_violation",
        /// An action was allowed by policy.
        PolicyAllow => "policy_allow",
        /// A guard blocked an action.
        GuardBlock => "guard_block",
        /// A guard allowed an action with a warning.
        GuardWarn => "guard_warn",
        /// A secret was detected.
        SecretDetected => "secret_detected",
        /// Network egress was blocked.
        EgressBlocked => "egress_blocked",
        /// A forbidden path was accessed.
        ForbiddenPath => "forbidden_path",
        /// A patch was rejected.
        PatchRejected => "patch_rejected",
        /// A session started.
        SessionStart => "session_start",
        /// A session ended.
        SessionEnd => "session_end",
    }
}

wire_enum! {
    /// The broad category of an event.
    EventCategory {
        /// Authentication.
        Authentication => "authentication",
        /// Authorization.
        Authorization => "authorization",
        /// Files.
        File => "file",
        /// Network.
        Network => "network",
        /// Processes.
        Process => "process",
        /// Tools (MCP and others).
        Tool => "tool",
        /// Configuration.
        Configuration => "configuration",
        /// Sessions.
        Session => "session",
    }
}

wire_enum! {
    /// The outcome of the action.
    Outcome {
        /// Allowed.
        Success => "success",
        /// Denied.
        Failure => "failure",
        /// Unknown.
        Unknown => "unknown",
    }
}

wire_enum! {
    /// Severity of a decision. Ordered: `info < low < medium < high < critical`.
    #[derive(PartialOrd, Ord, Default)]
    Severity {
        /// Informational.
        #[default]
        Info => "info",
        /// Low (never emitted by hushd; the TypeScript SDK emits it).
        Low => "low",
        /// Medium (hushd: guard Warning).
        Medium => "medium",
        /// High (hushd: guard Error).
        High => "high",
        /// Critical.
        Critical => "critical",
    }
}

wire_enum! {
    /// The kind of resource an action touched.
    #[derive(Default)]
    ResourceType {
        /// A file.
        #[default]
        File => "file",
        /// A network destination.
        Network => "network",
        /// A process / command line.
        Process => "process",
        /// A tool.
        Tool => "tool",
        /// Configuration.
        Configuration => "configuration",
    }
}

wire_enum! {
    /// The kind of a threat indicator.
    IndicatorType {
        /// A domain name.
        Domain => "domain",
        /// A filesystem path.
        FilePath => "file_path",
        /// A pattern.
        Pattern => "pattern",
    }
}

impl SecurityEvent {
    /// Serialises the event to its compact JSON wire form (one NDJSON line, without newline).
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Serialises the event into a writer-backed buffer (no intermediate `String`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail and every map key is a string.
        let _ = serde_json::to_writer(out, self);
    }
}
