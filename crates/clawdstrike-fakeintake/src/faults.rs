//! Fault injection: a script (a queue consumed in order) and a seeded random mode.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::SplitMix64;
use crate::model::Endpoint;

/// Which requests a fault applies to: one endpoint, a group, or all.
///
/// Admin-endpoint names: an [`Endpoint`] name (`logs`, `series`, `validate`, ...), `metrics`
/// (the three metrics APIs), `config` (dashboards, monitors, rules, signals) or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FaultTarget {
    /// One endpoint.
    Endpoint(Endpoint),
    /// `series`, `series_v1` and `distribution_points`.
    Metrics,
    /// Dashboards, monitors, rules and signals.
    Config,
    /// Every Datadog API (never the admin endpoint).
    All,
}

impl FaultTarget {
    /// Whether a request to `endpoint` is targeted.
    pub fn matches(self, endpoint: Endpoint) -> bool {
        match self {
            FaultTarget::Endpoint(e) => e == endpoint,
            FaultTarget::Metrics => endpoint.is_metrics(),
            FaultTarget::Config => endpoint.is_config(),
            FaultTarget::All => endpoint != Endpoint::Unknown,
        }
    }
}

impl From<Endpoint> for FaultTarget {
    fn from(e: Endpoint) -> Self {
        FaultTarget::Endpoint(e)
    }
}

impl fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultTarget::Endpoint(e) => e.fmt(f),
            FaultTarget::Metrics => f.write_str("metrics"),
            FaultTarget::Config => f.write_str("config"),
            FaultTarget::All => f.write_str("all"),
        }
    }
}

impl FromStr for FaultTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "metrics" => Ok(FaultTarget::Metrics),
            "config" => Ok(FaultTarget::Config),
            "all" => Ok(FaultTarget::All),
            other => other.parse::<Endpoint>().map(FaultTarget::Endpoint).map_err(|_| {
                format!(
                    "unknown fault target `{other}` (expected an endpoint name, `metrics`, `config` or `all`)"
                )
            }),
        }
    }
}

impl TryFrom<String> for FaultTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FaultTarget> for String {
    fn from(t: FaultTarget) -> Self {
        t.to_string()
    }
}

/// What to do with a faulted request.
///
/// JSON forms (admin endpoint): `{"status":503}`, `{"status":429,"retry_after":2}`,
/// `{"status":500,"body":"oops"}`, `{"delay_ms":250}`, `"reset"`, `"stall"`,
/// `{"rate_limit":{"limit":10,"period":60,"reset":30}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActionRepr", into = "ActionRepr")]
#[non_exhaustive]
pub enum FaultAction {
    /// Answer this status without handling the request.
    Status {
        /// The HTTP status.
        status: u16,
        /// A `Retry-After` header value (seconds or an HTTP date), if any.
        retry_after: Option<String>,
        /// The body; Datadog's `{"errors":["<reason>"]}` when `None`.
        body: Option<String>,
    },
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Close the connection at once (TCP RST), no response.
    Reset,
    /// Never answer, until [`crate::FakeIntake::release_stalled`], reset or shutdown; then
    /// the connection is reset.
    Stall,
    /// Answer 429 with Datadog's `X-RateLimit-*` headers.
    RateLimited {
        /// `X-RateLimit-Limit`.
        limit: u32,
        /// `X-RateLimit-Period`, seconds.
        period: u64,
        /// `X-RateLimit-Reset`, seconds until the window resets.
        reset: u64,
    },
}

impl FaultAction {
    /// Answer `status` with Datadog's error body and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        FaultAction::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// Answer `status` with `Retry-After: <seconds>`.
    pub fn status_with_retry_after(status: u16, seconds: u64) -> Self {
        FaultAction::Status {
            status,
            retry_after: Some(seconds.to_string()),
            body: None,
        }
    }

    /// Answer `status` with this body.
    pub fn status_with_body(status: u16, body: impl Into<String>) -> Self {
        FaultAction::Status {
            status,
            retry_after: None,
            body: Some(body.into()),
        }
    }

    /// Wait `delay`, then handle the request normally.
    pub fn delay(delay: Duration) -> Self {
        FaultAction::Delay(delay)
    }

    /// A short name for logs and stats: `status:503`, `delay`, `reset`, `stall`, `rate_limited`.
    pub fn kind(&self) -> String {
        match self {
            FaultAction::Status { status, .. } => format!("status:{status}"),
            FaultAction::Delay(_) => "delay".into(),
            FaultAction::Reset => "reset".into(),
            FaultAction::Stall => "stall".into(),
            FaultAction::RateLimited { .. } => "rate_limited".into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RetryAfterRepr {
    Seconds(u64),
    Text(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum NamedAction {
    Reset,
    Stall,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitRepr {
    limit: u32,
    period: u64,
    reset: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ActionRepr {
    Named(NamedAction),
    #[serde(rename_all = "snake_case")]
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<RetryAfterRepr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    Delay {
        delay_ms: u64,
    },
    RateLimit {
        rate_limit: RateLimitRepr,
    },
}

impl TryFrom<ActionRepr> for FaultAction {
    type Error = String;
    fn try_from(r: ActionRepr) -> Result<Self, Self::Error> {
        Ok(match r {
            ActionRepr::Named(NamedAction::Reset) => FaultAction::Reset,
            ActionRepr::Named(NamedAction::Stall) => FaultAction::Stall,
            ActionRepr::Status {
                status,
                retry_after,
                body,
            } => {
                if !(100..=599).contains(&status) {
                    return Err(format!("status {status} is not an HTTP status"));
                }
                FaultAction::Status {
                    status,
                    retry_after: retry_after.map(|r| match r {
                        RetryAfterRepr::Seconds(s) => s.to_string(),
                        RetryAfterRepr::Text(t) => t,
                    }),
                    body,
                }
            }
            ActionRepr::Delay { delay_ms } => FaultAction::Delay(Duration::from_millis(delay_ms)),
            ActionRepr::RateLimit { rate_limit } => FaultAction::RateLimited {
                limit: rate_limit.limit,
                period: rate_limit.period,
                reset: rate_limit.reset,
            },
        })
    }
}

impl From<FaultAction> for ActionRepr {
    fn from(a: FaultAction) -> Self {
        match a {
            FaultAction::Reset => ActionRepr::Named(NamedAction::Reset),
            FaultAction::Stall => ActionRepr::Named(NamedAction::Stall),
            FaultAction::Status {
                status,
                retry_after,
                body,
            } => ActionRepr::Status {
                status,
                retry_after: retry_after.map(|r| match r.parse::<u64>() {
                    Ok(s) => RetryAfterRepr::Seconds(s),
                    Err(_) => RetryAfterRepr::Text(r),
                }),
                body,
            },
            FaultAction::Delay(d) => ActionRepr::Delay {
                delay_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            FaultAction::RateLimited {
                limit,
                period,
                reset,
            } => ActionRepr::RateLimit {
                rate_limit: RateLimitRepr {
                    limit,
                    period,
                    reset,
                },
            },
        }
    }
}

fn one() -> u32 {
    1
}

/// A scripted fault: for the next `count` requests matching `endpoint`, do `action`.
///
/// JSON: `{"endpoint":"logs","count":3,"action":{"status":503,"retry_after":2}}` (`count`
/// defaults to 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Fault {
    /// Which requests.
    #[serde(rename = "endpoint")]
    pub target: FaultTarget,
    /// How many requests (at least 1).
    #[serde(default = "one")]
    pub count: u32,
    /// What to do.
    pub action: FaultAction,
}

impl Fault {
    /// One request to `target` gets `action`.
    pub fn new(target: impl Into<FaultTarget>, action: FaultAction) -> Self {
        Fault {
            target: target.into(),
            count: 1,
            action,
        }
    }

    /// The next `count` requests get it (0 is taken as 1).
    pub fn times(mut self, count: u32) -> Self {
        self.count = count.max(1);
        self
    }
}

/// One random fault: with `probability` (0 to 1) per request, do `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RandomFault {
    /// Chance per request, 0.0 to 1.0.
    pub probability: f64,
    /// What to do.
    pub action: FaultAction,
}

impl RandomFault {
    /// A fault with this probability per request.
    pub fn new(probability: f64, action: FaultAction) -> Self {
        RandomFault {
            probability,
            action,
        }
    }
}

/// Seeded random faults for soak tests: for each matching request, each fault is rolled in
/// order and the first hit applies. The same seed and request order give the same faults.
/// Scripted faults take precedence.
///
/// JSON: `{"seed":42,"endpoint":"logs","faults":[{"probability":0.05,"action":{"status":503}}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RandomFaults {
    /// The seed.
    pub seed: u64,
    /// Which requests (default `all`).
    #[serde(rename = "endpoint", default = "all_target")]
    pub target: FaultTarget,
    /// The faults, rolled in order.
    pub faults: Vec<RandomFault>,
}

fn all_target() -> FaultTarget {
    FaultTarget::All
}

impl RandomFaults {
    /// Random faults with this seed on every endpoint, none configured yet.
    pub fn new(seed: u64) -> Self {
        RandomFaults {
            seed,
            target: FaultTarget::All,
            faults: Vec::new(),
        }
    }

    /// Only requests to `target`.
    pub fn on(mut self, target: impl Into<FaultTarget>) -> Self {
        self.target = target.into();
        self
    }

    /// Adds a fault with this probability per request.
    pub fn with(mut self, probability: f64, action: FaultAction) -> Self {
        self.faults.push(RandomFault::new(probability, action));
        self
    }
}

/// The fault machinery's state (inside the shared state's mutex).
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub(crate) queue: VecDeque<Fault>,
    pub(crate) random: Option<(RandomFaults, SplitMix64)>,
}

impl FaultState {
    /// The fault for the next request to `endpoint`, consuming it.
    pub(crate) fn take(&mut self, endpoint: Endpoint) -> Option<FaultAction> {
        if let Some(pos) = self.queue.iter().position(|f| f.target.matches(endpoint)) {
            let fault = &mut self.queue[pos];
            let action = fault.action.clone();
            fault.count = fault.count.saturating_sub(1);
            if fault.count == 0 {
                self.queue.remove(pos);
            }
            return Some(action);
        }
        let (random, rng) = self.random.as_mut()?;
        if !random.target.matches(endpoint) {
            return None;
        }
        for fault in &random.faults {
            if rng.next_f64() < fault.probability {
                return Some(fault.action.clone());
            }
        }
        None
    }

    pub(crate) fn set_random(&mut self, random: Option<RandomFaults>) {
        self.random = random.map(|r| {
            let rng = SplitMix64::new(r.seed);
            (r, rng)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_from_the_documented_json_forms() {
        let cases = [
            (r#"{"status":503}"#, FaultAction::status(503)),
            (
                r#"{"status":429,"retry_after":2}"#,
                FaultAction::status_with_retry_after(429, 2),
            ),
            (
                r#"{"status":500,"body":"x"}"#,
                FaultAction::status_with_body(500, "x"),
            ),
            (
                r#"{"delay_ms":250}"#,
                FaultAction::delay(Duration::from_millis(250)),
            ),
            (r#""reset""#, FaultAction::Reset),
            (r#""stall""#, FaultAction::Stall),
            (
                r#"{"rate_limit":{"limit":10,"period":60,"reset":7}}"#,
                FaultAction::RateLimited {
                    limit: 10,
                    period: 60,
                    reset: 7,
                },
            ),
        ];
        for (json, want) in cases {
            let got: FaultAction = serde_json::from_str(json).unwrap();
            assert_eq!(got, want, "{json}");
            let back: FaultAction =
                serde_json::from_str(&serde_json::to_string(&got).unwrap()).unwrap();
            assert_eq!(back, want, "round trip of {json}");
        }
        assert!(serde_json::from_str::<FaultAction>(r#"{"status":42}"#).is_err());
        assert!(serde_json::from_str::<FaultAction>(r#""explode""#).is_err());
    }

    #[test]
    fn scripted_faults_are_consumed_in_order_per_endpoint() {
        let mut st = FaultState::default();
        st.queue
            .push_back(Fault::new(Endpoint::Logs, FaultAction::status(503)).times(2));
        st.queue
            .push_back(Fault::new(FaultTarget::Metrics, FaultAction::Reset));
        st.queue.push_back(Fault::new(
            Endpoint::Logs,
            FaultAction::status_with_retry_after(429, 1),
        ));
        assert_eq!(st.take(Endpoint::Validate), None);
        assert_eq!(st.take(Endpoint::Logs), Some(FaultAction::status(503)));
        assert_eq!(st.take(Endpoint::Series), Some(FaultAction::Reset));
        assert_eq!(st.take(Endpoint::Logs), Some(FaultAction::status(503)));
        assert_eq!(
            st.take(Endpoint::Logs),
            Some(FaultAction::status_with_retry_after(429, 1))
        );
        assert_eq!(st.take(Endpoint::Logs), None);
        assert_eq!(st.take(Endpoint::Series), None);
    }

    #[test]
    fn random_faults_replay_with_the_same_seed() {
        let run = |seed| {
            let mut st = FaultState::default();
            st.set_random(Some(
                RandomFaults::new(seed)
                    .on(Endpoint::Logs)
                    .with(0.3, FaultAction::status(503)),
            ));
            (0..200)
                .map(|_| st.take(Endpoint::Logs).is_some())
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        let hits = a.iter().filter(|h| **h).count();
        assert!((20..=100).contains(&hits), "{hits} hits of 200 at p=0.3");
        let mut st = FaultState::default();
        st.set_random(Some(
            RandomFaults::new(1)
                .on(Endpoint::Logs)
                .with(1.0, FaultAction::Reset),
        ));
        assert_eq!(st.take(Endpoint::Series), None, "other endpoints untouched");
    }
}
