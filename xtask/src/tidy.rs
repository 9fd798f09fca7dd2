//! The layering rule of the workspace, enforced from `cargo metadata`.
//!
//! Each of our crates may depend only on the crates of ours its row allows. The table is the
//! architecture; change it deliberately, together with the crate docs that state it.

use std::collections::BTreeSet;
use std::fmt;
use std::process::Command;

/// For each crate of ours, the crates of ours it may depend on (normal and build dependencies).
/// `None` means "any of ours" (the binary, xtask and the end-to-end tests).
const LAYERS: &[(&str, Option<&[&str]>)] = &[
    ("clawdstrike-schema", Some(&[])),
    ("clawdstrike-keys", Some(&[])),
    ("clawdstrike-export", Some(&["clawdstrike-schema"])),
    (
        "clawdstrike-datadog",
        Some(&[
            "clawdstrike-schema",
            "clawdstrike-export",
            "clawdstrike-keys",
        ]),
    ),
    ("clawdstrike-fakeintake", Some(&[])),
    ("clawdstrike-dd", None),
    ("xtask", None),
    ("clawdstrike-e2e", None),
];

/// Crates that nothing of ours may depend on, under any kind of dependency.
const LEAVES: &[&str] = &["clawdstrike-dd", "xtask", "clawdstrike-e2e"];

/// Test-only servers any crate may use as a dev-dependency on top of its row.
const DEV_EXTRAS: &[&str] = &["clawdstrike-fakeintake"];

/// The kind of a dependency edge, as `cargo metadata` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Normal,
    Dev,
    Build,
}

/// One dependency edge between two of our crates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) kind: Kind,
}

/// Everything wrong with the layering, one line each.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violations(pub(crate) Vec<String>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} layering violation(s):", self.0.len())?;
        for v in &self.0 {
            writeln!(f, "  - {v}")?;
        }
        Ok(())
    }
}

/// Checks `edges` between `members` against [`LAYERS`].
pub(crate) fn check(members: &BTreeSet<String>, edges: &[Edge]) -> Result<(), Violations> {
    let mut problems = Vec::new();
    for member in members {
        if !LAYERS.iter().any(|(name, _)| name == member) {
            problems.push(format!(
                "`{member}` has no row in the layering table (xtask/src/tidy.rs): add one and state it in the crate docs"
            ));
        }
    }
    for edge in edges {
        if LEAVES.contains(&edge.to.as_str()) {
            problems.push(format!(
                "`{}` depends on `{}` ({:?}), which nothing may depend on",
                edge.from, edge.to, edge.kind
            ));
            continue;
        }
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == edge.from) else {
            continue;
        };
        let Some(allowed) = allowed else { continue };
        let ok = allowed.contains(&edge.to.as_str())
            || (edge.kind == Kind::Dev
                && (DEV_EXTRAS.contains(&edge.to.as_str()) || edge.from == edge.to));
        if !ok {
            problems.push(format!(
                "`{}` must not depend on `{}` ({:?} dependency); it may depend on: {}",
                edge.from,
                edge.to,
                edge.kind,
                if allowed.is_empty() {
                    "none of our crates".to_owned()
                } else {
                    allowed.join(", ")
                }
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Violations(problems))
    }
}

/// Reads the workspace's crates and their edges from `cargo metadata`.
pub(crate) fn workspace_graph() -> Result<(BTreeSet<String>, Vec<Edge>), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(crate::project_root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output is not JSON: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str())
        .map(str::to_owned)
        .collect();
    let mut edges = Vec::new();
    for package in packages {
        let from = package["name"].as_str().unwrap_or_default();
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let to = dep["name"].as_str().unwrap_or_default();
            if !members.contains(to) {
                continue;
            }
            let kind = match dep["kind"].as_str() {
                Some("dev") => Kind::Dev,
                Some("build") => Kind::Build,
                _ => Kind::Normal,
            };
            edges.push(Edge {
                from: from.to_owned(),
                to: to.to_owned(),
                kind,
            });
        }
    }
    Ok((members, edges))
}

/// Checks the real workspace.
pub(crate) fn check_workspace() -> Result<(), String> {
    let (members, edges) = workspace_graph()?;
    check(&members, &edges).map_err(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str, kind: Kind) -> Edge {
        Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            kind,
        }
    }

    #[test]
    fn the_workspace_respects_its_layering() {
        if let Err(problems) = check_workspace() {
            panic!("{problems}");
        }
    }

    #[test]
    fn the_real_graph_has_the_expected_edges() {
        // Guards the reader itself: if it silently found no edges, the check above would pass.
        let (members, edges) = workspace_graph().unwrap();
        assert!(members.contains("clawdstrike-schema"));
        assert!(
            edges.contains(&edge(
                "clawdstrike-export",
                "clawdstrike-schema",
                Kind::Normal
            )),
            "{edges:?}"
        );
    }

    #[test]
    fn a_forbidden_edge_is_reported_by_name() {
        let (members, mut edges) = workspace_graph().unwrap();
        edges.push(edge(
            "clawdstrike-schema",
            "clawdstrike-export",
            Kind::Normal,
        ));
        let err = check(&members, &edges).unwrap_err();
        assert_eq!(
            err.0,
            [
                "`clawdstrike-schema` must not depend on `clawdstrike-export` (Normal dependency); it may depend on: none of our crates"
            ]
        );
    }

    #[test]
    fn fakeintake_must_not_know_clawdstrike_types() {
        let members: BTreeSet<String> = ["clawdstrike-fakeintake", "clawdstrike-schema"]
            .map(str::to_owned)
            .into();
        let err = check(
            &members,
            &[edge(
                "clawdstrike-fakeintake",
                "clawdstrike-schema",
                Kind::Normal,
            )],
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(
            err.0[0]
                .starts_with("`clawdstrike-fakeintake` must not depend on `clawdstrike-schema`")
        );
    }

    #[test]
    fn nothing_depends_on_the_binary_even_for_tests() {
        let members: BTreeSet<String> = ["clawdstrike-datadog", "clawdstrike-dd"]
            .map(str::to_owned)
            .into();
        let err = check(
            &members,
            &[edge("clawdstrike-datadog", "clawdstrike-dd", Kind::Dev)],
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            [
                "`clawdstrike-datadog` depends on `clawdstrike-dd` (Dev), which nothing may depend on"
            ]
        );
    }

    #[test]
    fn dev_dependencies_may_use_the_fake_intake_but_not_skip_layers() {
        let members: BTreeSet<String> = [
            "clawdstrike-export",
            "clawdstrike-fakeintake",
            "clawdstrike-datadog",
        ]
        .map(str::to_owned)
        .into();
        assert!(
            check(
                &members,
                &[edge(
                    "clawdstrike-export",
                    "clawdstrike-fakeintake",
                    Kind::Dev
                )]
            )
            .is_ok()
        );
        assert!(
            check(
                &members,
                &[edge("clawdstrike-export", "clawdstrike-datadog", Kind::Dev)]
            )
            .is_err()
        );
    }

    #[test]
    fn a_new_crate_without_a_row_is_reported() {
        let members: BTreeSet<String> = ["clawdstrike-splunk"].map(str::to_owned).into();
        let err = check(&members, &[]).unwrap_err();
        assert!(
            err.0[0].contains("`clawdstrike-splunk` has no row"),
            "{err}"
        );
    }
}
