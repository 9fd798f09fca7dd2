//! `cargo xtask templates`: Datadog dashboards, monitors and Cloud SIEM detection rules as code.
//!
//! - `check` (the default): renders every template in `templates/` with every values file and
//!   checks the result offline: structure (typed models denying unknown keys and values),
//!   semantics (query names, conditions, thresholds, tags, handles), the exporter's catalogue
//!   (metrics, tags, log facets) and key-like strings. Prints every problem as
//!   `file#/json/pointer: message` and fails if there is any.
//! - `check --structural FILE...`: the structural and semantic checks only, for anyone's
//!   dashboard, monitor or rule JSON.
//! - `publish`, `pull`, `diff`: see [`sync`].

pub(crate) mod check;
pub(crate) mod expr;
pub(crate) mod model;
pub(crate) mod queries;
pub(crate) mod sync;
pub(crate) mod values;

#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

use self::check::CatalogueContext;
use self::values::{Compliance, Values};

/// A problem inside one document: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Issue {
    pub(crate) pointer: String,
    pub(crate) message: String,
}

impl Issue {
    pub(crate) fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// A problem in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Problem {
    /// The file, relative to the workspace (`templates/monitors/x.json`).
    pub(crate) file: String,
    pub(crate) pointer: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}: {}", self.file, self.pointer, self.message)
    }
}

/// Escapes a JSON pointer segment (`~` → `~0`, `/` → `~1`).
pub(crate) fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The kind of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Dashboard,
    Monitor,
    Rule,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Dashboard, Kind::Monitor, Kind::Rule];

    /// The folder under `templates/`.
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Kind::Dashboard => "dashboards",
            Kind::Monitor => "monitors",
            Kind::Rule => "rules",
        }
    }

    pub(crate) fn api(self) -> clawdstrike_datadog::config_api::ObjectKind {
        use clawdstrike_datadog::config_api::ObjectKind;
        match self {
            Kind::Dashboard => ObjectKind::Dashboard,
            Kind::Monitor => ObjectKind::Monitor,
            Kind::Rule => ObjectKind::Rule,
        }
    }

    /// Guesses the kind of a Datadog JSON object.
    pub(crate) fn detect(doc: &Value) -> Option<Kind> {
        let obj = doc.as_object()?;
        if obj.contains_key("widgets") || obj.contains_key("layout_type") {
            Some(Kind::Dashboard)
        } else if obj.contains_key("cases") || obj.contains_key("isEnabled") {
            Some(Kind::Rule)
        } else if obj.contains_key("query") && obj.contains_key("type") {
            Some(Kind::Monitor)
        } else {
            None
        }
    }
}

/// Reads a JSON or YAML file into a JSON value.
pub(crate) fn load_document(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if ext == "yaml" || ext == "yml" {
        serde_yaml_ng::from_str::<Value>(&text).map_err(|e| format!("invalid YAML: {e}"))
    } else {
        serde_json::from_str::<Value>(&text).map_err(|e| format!("invalid JSON: {e}"))
    }
}

fn is_template_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    )
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// One template file.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) kind: Kind,
    /// Stable identity: `<kind dir>/<file stem>`, e.g. `monitors/high-denial-rate`.
    pub(crate) id: String,
    pub(crate) file: String,
    pub(crate) raw: Value,
}

/// The templates directory, loaded.
#[derive(Debug)]
pub(crate) struct TemplateSet {
    pub(crate) values: Vec<(String, Values)>,
    pub(crate) compliance: Option<Compliance>,
    /// `compliance.yaml` exists but could not be read (already a problem).
    pub(crate) compliance_broken: bool,
    pub(crate) templates: Vec<Template>,
    /// Problems found while loading (unreadable files, bad values, bad compliance mapping).
    pub(crate) problems: Vec<Problem>,
}

impl TemplateSet {
    /// Loads `dir` (the `templates/` folder). File names are shown relative to its parent.
    pub(crate) fn load(dir: &Path) -> TemplateSet {
        let top = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("templates")
            .to_owned();
        let display = |rel: &str| format!("{top}/{rel}");
        let mut problems = Vec::new();
        let mut push = |file: &str, issues: Vec<Issue>| {
            for i in issues {
                problems.push(Problem {
                    file: file.to_owned(),
                    pointer: i.pointer,
                    message: i.message,
                });
            }
        };

        let mut values = Vec::new();
        let mut values_files = 0;
        for path in sorted_files(&dir.join("values")) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let file = display(&format!("values/{name}"));
            if !is_template_file(&path) {
                push(
                    &file,
                    vec![Issue::new(
                        "",
                        "not a values file (expected .yaml, .yml or .json)",
                    )],
                );
                continue;
            }
            let parsed = load_document(&path).and_then(|doc| {
                model::parse::<Values>(&doc).map_err(|e| format!("{}\u{0}{}", e.pointer, e.message))
            });
            match parsed {
                Ok(v) => {
                    let mut issues = Vec::new();
                    v.check(&mut issues);
                    // Templates are rendered only with good values: a bad value would make
                    // every template that uses it fail too.
                    if issues.is_empty() {
                        values.push((file, v));
                    } else {
                        push(&file, issues);
                    }
                }
                Err(message) => push(&file, vec![split_issue(&message)]),
            }
            values_files += 1;
        }
        if values_files == 0 {
            push(
                &display("values"),
                vec![Issue::new(
                    "",
                    "no values file: add values/<environment>.yaml",
                )],
            );
        }

        let compliance_path = dir.join("compliance.yaml");
        let mut compliance_broken = false;
        let compliance = if compliance_path.exists() {
            let file = display("compliance.yaml");
            match load_document(&compliance_path).and_then(|doc| {
                model::parse::<Compliance>(&doc)
                    .map_err(|e| format!("{}\u{0}{}", e.pointer, e.message))
            }) {
                Ok(c) => {
                    let mut issues = Vec::new();
                    c.check(&mut issues);
                    push(&file, issues);
                    Some(c)
                }
                Err(message) => {
                    push(&file, vec![split_issue(&message)]);
                    compliance_broken = true;
                    None
                }
            }
        } else {
            None
        };

        let mut templates = Vec::new();
        for kind in Kind::ALL {
            for path in sorted_files(&dir.join(kind.dir())) {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let file = display(&format!("{}/{name}", kind.dir()));
                if !is_template_file(&path) {
                    push(
                        &file,
                        vec![Issue::new(
                            "",
                            "not a template (expected .json, .yaml or .yml)",
                        )],
                    );
                    continue;
                }
                let stem = path
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let id = format!("{}/{stem}", kind.dir());
                // The id travels in a tag (`template_id:monitors/high-denial-rate`) and in a
                // dashboard's description line: a space or an upper-case letter would make
                // the object impossible to find again, and each publish a duplicate.
                let tag_safe = !stem.is_empty()
                    && stem.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)
                    });
                if !tag_safe {
                    push(
                        &file,
                        vec![Issue::new(
                            "",
                            format!(
                                "the file name is the template id (`{id}`), which travels in tags: use lowercase letters, digits, `-`, `_` and `.`"
                            ),
                        )],
                    );
                    continue;
                }
                if templates.iter().any(|t: &Template| t.id == id) {
                    push(
                        &file,
                        vec![Issue::new(
                            "",
                            format!(
                                "another file has the same name: template ids (`{id}`) must be unique"
                            ),
                        )],
                    );
                    continue;
                }
                match load_document(&path) {
                    Ok(raw) => templates.push(Template {
                        kind,
                        id,
                        file,
                        raw,
                    }),
                    Err(message) => push(&file, vec![Issue::new("", message)]),
                }
            }
        }
        TemplateSet {
            values,
            compliance,
            compliance_broken,
            templates,
            problems,
        }
    }

    /// Renders `template` with `values`: compliance groups expanded, placeholders replaced.
    pub(crate) fn render(&self, template: &Template, values: &Values) -> (Value, Vec<Issue>) {
        let mut doc = template.raw.clone();
        let mut issues = Vec::new();
        if template.kind == Kind::Dashboard {
            Compliance::expand(
                self.compliance.as_ref(),
                self.compliance_broken,
                &mut doc,
                &mut issues,
            );
        }
        values::render(&mut doc, values, "", &mut issues);
        (doc, issues)
    }

    /// Renders and checks every template with every values file.
    pub(crate) fn check_all(&self) -> Vec<Problem> {
        let mut problems = self.problems.clone();
        for template in &self.templates {
            // Issue → the values files it appears with.
            let mut seen: BTreeMap<Issue, Vec<&str>> = BTreeMap::new();
            for (values_file, values) in &self.values {
                let (doc, mut issues) = self.render(template, values);
                let ctx = CatalogueContext {
                    metric_prefix: values.metric_prefix.clone(),
                };
                issues.extend(check::check_document(template.kind, &doc, Some(&ctx)));
                issues.dedup();
                for issue in issues {
                    let entry = seen.entry(issue).or_default();
                    if !entry.contains(&values_file.as_str()) {
                        entry.push(values_file);
                    }
                }
            }
            for (issue, files) in seen {
                let message = if files.len() == self.values.len() {
                    issue.message
                } else {
                    format!("{} (rendered with {})", issue.message, files.join(", "))
                };
                problems.push(Problem {
                    file: template.file.clone(),
                    pointer: issue.pointer,
                    message,
                });
            }
        }
        problems
    }

    /// The values file for `env` (by file stem or by its `env` value).
    pub(crate) fn values_for(&self, env: &str) -> Option<&Values> {
        self.values
            .iter()
            .find(|(file, v)| {
                v.env == env || Path::new(file).file_stem().and_then(|s| s.to_str()) == Some(env)
            })
            .map(|(_, v)| v)
    }
}

fn split_issue(message: &str) -> Issue {
    match message.split_once('\u{0}') {
        Some((pointer, message)) => Issue::new(pointer, message),
        None => Issue::new("", message),
    }
}

/// Checks the templates directory; returns every problem.
#[cfg(test)]
pub(crate) fn check_templates(dir: &Path) -> Vec<Problem> {
    TemplateSet::load(dir).check_all()
}

/// Checks arbitrary Datadog JSON/YAML files structurally (no catalogue, no rendering).
pub(crate) fn check_structural(files: &[PathBuf]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let doc = match load_document(path) {
            Ok(doc) => doc,
            Err(message) => {
                problems.push(Problem {
                    file,
                    pointer: String::new(),
                    message,
                });
                continue;
            }
        };
        let Some(kind) = Kind::detect(&doc) else {
            problems.push(Problem {
                file,
                pointer: String::new(),
                message: "not a dashboard (`widgets`), monitor (`query` and `type`) or detection rule (`cases`)".to_owned(),
            });
            continue;
        };
        for issue in check::check_document(kind, &doc, None) {
            problems.push(Problem {
                file: file.clone(),
                pointer: issue.pointer,
                message: issue.message,
            });
        }
    }
    problems
}

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask templates",
    about = "Datadog dashboards, monitors and detection rules as code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the templates offline (the default), or any Datadog JSON with --structural.
    Check {
        /// Check these Datadog dashboard, monitor or rule files structurally (no catalogue).
        #[arg(long, num_args = 1.., value_name = "FILE")]
        structural: Option<Vec<PathBuf>>,
        /// The templates directory.
        #[arg(long, default_value_os_t = crate::project_root().join("templates"))]
        dir: PathBuf,
    },
    /// Show what would change in Datadog; change it with --apply.
    Publish {
        #[command(flatten)]
        remote: sync::RemoteArgs,
        /// Create and update the objects (default: only show the plan).
        #[arg(long)]
        apply: bool,
        /// With --apply, also delete managed objects whose template is gone.
        #[arg(long)]
        prune: bool,
    },
    /// Export the managed objects from Datadog into a directory (backup and recovery).
    Pull {
        #[command(flatten)]
        remote: sync::RemoteArgs,
        /// Where to write `<kind>/<name>.json`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Report drift between Datadog and the templates; exits 1 on drift.
    Diff {
        #[command(flatten)]
        remote: sync::RemoteArgs,
    },
}

/// `cargo xtask templates [check|publish|pull|diff] ...`; no subcommand means `check`.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut argv = vec!["cargo xtask templates".to_owned()];
    let first = args.first().map(String::as_str);
    if !matches!(
        first,
        Some("check" | "publish" | "pull" | "diff" | "help" | "--help" | "-h")
    ) {
        argv.push("check".to_owned());
    }
    argv.extend(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check {
            structural: Some(files),
            ..
        } => report(&check_structural(&files), files.len(), "file"),
        Command::Check {
            structural: None,
            dir,
        } => {
            let set = TemplateSet::load(&dir);
            let problems = set.check_all();
            report(&problems, set.templates.len(), "template")
        }
        Command::Publish {
            remote,
            apply,
            prune,
        } => sync::main(remote, sync::Action::Publish { apply, prune }),
        Command::Pull { remote, out } => sync::main(remote, sync::Action::Pull { out }),
        Command::Diff { remote } => sync::main(remote, sync::Action::Diff),
    }
}

fn report(problems: &[Problem], checked: usize, what: &str) -> ExitCode {
    if problems.is_empty() {
        println!("templates: {checked} {what}(s) checked, no problems");
        ExitCode::SUCCESS
    } else {
        for p in problems {
            eprintln!("{p}");
        }
        eprintln!(
            "templates: {} problem(s) in {checked} {what}(s)",
            problems.len()
        );
        ExitCode::FAILURE
    }
}
