//! Datadog sites and their hosts.

use std::fmt;
use std::str::FromStr;

/// A Datadog site (`DD_SITE`). Unknown sites are an error, never a silent fallback to US1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Site {
    /// `datadoghq.com` (US1, the default).
    #[default]
    Us1,
    /// `us3.datadoghq.com`.
    Us3,
    /// `us5.datadoghq.com`.
    Us5,
    /// `datadoghq.eu`.
    Eu1,
    /// `ap1.datadoghq.com`.
    Ap1,
    /// `ap2.datadoghq.com`.
    Ap2,
    /// `uk1.datadoghq.com`.
    Uk1,
    /// `ddog-gov.com` (US1-FED).
    Gov,
    /// `us2.ddog-gov.com`.
    Gov2,
}

impl Site {
    /// Every site.
    pub const ALL: &'static [Site] = &[
        Site::Us1,
        Site::Us3,
        Site::Us5,
        Site::Eu1,
        Site::Ap1,
        Site::Ap2,
        Site::Uk1,
        Site::Gov,
        Site::Gov2,
    ];

    /// The site's domain, as in `DD_SITE`.
    pub const fn domain(self) -> &'static str {
        match self {
            Site::Us1 => "datadoghq.com",
            Site::Us3 => "us3.datadoghq.com",
            Site::Us5 => "us5.datadoghq.com",
            Site::Eu1 => "datadoghq.eu",
            Site::Ap1 => "ap1.datadoghq.com",
            Site::Ap2 => "ap2.datadoghq.com",
            Site::Uk1 => "uk1.datadoghq.com",
            Site::Gov => "ddog-gov.com",
            Site::Gov2 => "us2.ddog-gov.com",
        }
    }

    /// Base URL of the logs intake (`https://http-intake.logs.<site>`).
    pub fn logs_base_url(self) -> String {
        format!("https://http-intake.logs.{}", self.domain())
    }

    /// Base URL of the API (`https://api.<site>`): metrics, validate, configuration, signals.
    pub fn api_base_url(self) -> String {
        format!("https://api.{}", self.domain())
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.domain())
    }
}

/// An unknown `site`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown Datadog site `{0}`; expected one of: datadoghq.com, us3.datadoghq.com, us5.datadoghq.com, datadoghq.eu, ap1.datadoghq.com, ap2.datadoghq.com, uk1.datadoghq.com, ddog-gov.com, us2.ddog-gov.com"
)]
pub struct UnknownSite(pub String);

impl FromStr for Site {
    type Err = UnknownSite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().trim_end_matches('/').to_ascii_lowercase();
        let wanted = wanted.strip_prefix("https://").unwrap_or(&wanted);
        let wanted = wanted.strip_prefix("app.").unwrap_or(wanted);
        Site::ALL
            .iter()
            .copied()
            .find(|site| site.domain() == wanted)
            .ok_or_else(|| UnknownSite(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for Site {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Site {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.domain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_site_round_trips_and_builds_its_hosts() {
        for site in Site::ALL {
            assert_eq!(site.domain().parse::<Site>().unwrap(), *site);
            assert_eq!(
                site.logs_base_url(),
                format!("https://http-intake.logs.{}", site.domain())
            );
            assert_eq!(
                site.api_base_url(),
                format!("https://api.{}", site.domain())
            );
        }
        assert_eq!(
            "datadoghq.eu".parse::<Site>().unwrap().logs_base_url(),
            "https://http-intake.logs.datadoghq.eu"
        );
    }

    #[test]
    fn unknown_site_is_an_error_not_us1() {
        let err = "datadoghq.co".parse::<Site>().unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown Datadog site `datadoghq.co`")
        );
    }
}
