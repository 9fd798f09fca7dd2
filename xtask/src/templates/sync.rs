//! `publish`, `pull` and `diff`: the templates against a Datadog organisation.
//!
//! # Identity
//!
//! Every object we manage carries a stable identity, so that publishing twice creates nothing
//! new and objects can be found again after a rename:
//!
//! - monitors and rules: the tags `managed_by:clawdstrike-templates`,
//!   `template_id:<kind>/<file stem>` and `template_env:<env>`;
//! - dashboards (which have no tags to search by): a last line in the description,
//!   `[clawdstrike-templates] template_id=<kind>/<file stem> env=<env> hash=<hex>`; monitors and
//!   rules also carry `template_hash:<hex>` ([`content_hash`] of the rendered template).
//!
//! # Drift
//!
//! An object is in sync when everything the template sets is what Datadog holds (Datadog adds
//! fields of its own, such as ids and defaults, which are ignored). Tags compare as sets.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use clawdstrike_datadog::config_api::{ConfigApiError, ConfigClient, Validation};
use clawdstrike_datadog::site::Site;
use clawdstrike_keys::{KeyHolder, KeySource, RefreshOptions};
use serde_json::{Map, Value};

use super::{Kind, Problem, TemplateSet, escape_pointer};

/// The tag every managed monitor and rule carries.
pub(crate) const MANAGED_TAG: &str = "managed_by:clawdstrike-templates";
/// The marker that starts the identity line of a dashboard's description.
pub(crate) const DASHBOARD_MARKER: &str = "[clawdstrike-templates]";

/// Where Datadog is and which environment to publish.
#[derive(Debug, Clone, Args)]
pub(crate) struct RemoteArgs {
    /// The values file to render with (`templates/values/<env>.yaml`).
    #[arg(long)]
    pub(crate) env: String,
    /// The Datadog site (`datadoghq.com`, `datadoghq.eu`, ...).
    #[arg(long, env = "DD_SITE", default_value = "datadoghq.com")]
    pub(crate) site: String,
    /// Override the API base URL (a proxy, or the fake intake); wins over --site.
    #[arg(long, value_name = "URL")]
    pub(crate) api_url: Option<String>,
    /// Read the API key from this file instead of DD_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// Read the application key from this file instead of DD_APP_KEY.
    #[arg(long, value_name = "PATH")]
    pub(crate) app_key_file: Option<PathBuf>,
    /// The templates directory.
    #[arg(long, default_value_os_t = crate::project_root().join("templates"))]
    pub(crate) dir: PathBuf,
}

/// What to do.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Publish { apply: bool, prune: bool },
    Pull { out: PathBuf },
    Diff,
}

/// The CLI entry: resolves site and keys, runs `action`, maps the outcome to an exit code
/// (0 fine, 1 drift or partial failure, 2 cannot run).
pub(crate) fn main(remote: RemoteArgs, action: Action) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("templates: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let client = match client_for(&remote).await {
            Ok(client) => client,
            Err(message) => {
                eprintln!("templates: {message}");
                return ExitCode::from(2);
            }
        };
        let mut out = std::io::stdout();
        let result = match action {
            Action::Publish { apply, prune } => {
                publish(&client, &remote.dir, &remote.env, apply, prune, &mut out).await
            }
            Action::Diff => diff(&client, &remote.dir, &remote.env, &mut out).await,
            Action::Pull { out: dir } => {
                pull(&client, &remote.dir, &remote.env, &dir, &mut out).await
            }
        };
        match result {
            Ok(Outcome::Clean) => ExitCode::SUCCESS,
            Ok(Outcome::Dirty) => ExitCode::FAILURE,
            Err(message) => {
                eprintln!("templates: {message}");
                ExitCode::from(2)
            }
        }
    })
}

pub(crate) async fn client_for(remote: &RemoteArgs) -> Result<ConfigClient, String> {
    let base = match &remote.api_url {
        Some(url) => url.clone(),
        None => remote
            .site
            .parse::<Site>()
            .map_err(|e| e.to_string())?
            .api_base_url(),
    };
    let source =
        |file: &Option<PathBuf>, default: KeySource| file.clone().map_or(default, KeySource::File);
    let api = KeyHolder::from_source(
        source(&remote.api_key_file, KeySource::env_default_api()),
        RefreshOptions::default(),
    )
    .await
    .map_err(|e| format!("the API key: {e}"))?;
    let app = KeyHolder::from_source(
        source(&remote.app_key_file, KeySource::env_default_app()),
        RefreshOptions::default(),
    )
    .await
    .map_err(|e| format!("the application key: {e}"))?;
    ConfigClient::new(
        base,
        api.current().secret().clone(),
        app.current().secret().clone(),
    )
    .map_err(|e| e.to_string())
}

/// Whether a run found everything as it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In sync (diff), or every change applied (publish), or every object exported (pull).
    Clean,
    /// Drift found (diff), changes pending or partially failed (publish), or a failure (pull).
    Dirty,
}

/// One object as the templates want it.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    pub(crate) kind: Kind,
    pub(crate) template_id: String,
    pub(crate) body: Value,
}

/// One managed object as Datadog holds it.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub(crate) kind: Kind,
    pub(crate) template_id: String,
    pub(crate) id: String,
    pub(crate) body: Value,
}

/// The environment `env` names: the `env` of its values file, found by that value or by the
/// file's name (`--env prod` for `values/prod.yaml` holding `env: production`). Managed objects
/// are tagged with the value, so that is what finds them again. Unknown: `env` itself.
pub(crate) fn canonical_env(dir: &Path, env: &str) -> String {
    TemplateSet::load(dir)
        .values_for(env)
        .map_or_else(|| env.to_owned(), |v| v.env.clone())
}

/// Renders the templates for `env` with their identity, after a full check.
pub(crate) fn desired_objects(dir: &Path, env: &str) -> Result<Vec<Desired>, String> {
    let set = TemplateSet::load(dir);
    let problems: Vec<Problem> = set.check_all();
    if !problems.is_empty() {
        let mut message = format!(
            "the templates have {} problem(s); run `cargo xtask templates`:",
            problems.len()
        );
        for p in problems.iter().take(20) {
            let _ = write!(message, "\n  {p}");
        }
        return Err(message);
    }
    let values = set.values_for(env).ok_or_else(|| {
        let known: Vec<&str> = set.values.iter().map(|(_, v)| v.env.as_str()).collect();
        format!(
            "no values file for environment `{env}` (known: {})",
            known.join(", ")
        )
    })?;
    let mut desired = Vec::new();
    for template in &set.templates {
        let (mut body, _) = set.render(template, values);
        add_identity(
            template.kind,
            &template.id,
            &values.env,
            &values.tags,
            &mut body,
        );
        desired.push(Desired {
            kind: template.kind,
            template_id: template.id.clone(),
            body,
        });
    }
    Ok(desired)
}

/// A digest of the rendered template (FNV-1a over its canonical JSON: object keys sorted),
/// kept with the object, so that a field removed from the template is drift too: comparing
/// fields finds only those the template still sets.
pub(crate) fn content_hash(body: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn add_identity(kind: Kind, template_id: &str, env: &str, extra_tags: &[String], body: &mut Value) {
    // A template made by `pull` holds the identity it was published with (tags, the
    // dashboard marker): not part of its content, and added again below.
    if let Some(tags) = body.get_mut("tags").and_then(Value::as_array_mut) {
        tags.retain(|t| {
            !t.as_str().is_some_and(|t| {
                t == MANAGED_TAG
                    || ["template_id:", "template_env:", HASH_TAG]
                        .iter()
                        .any(|p| t.starts_with(p))
                    // (Only monitors and rules are given the values file's tags back.)
                    || (kind != Kind::Dashboard && extra_tags.iter().any(|x| x == t))
            })
        });
    }
    if kind == Kind::Dashboard
        && let Some(Value::String(description)) = body.get_mut("description")
    {
        let kept: Vec<&str> = description
            .lines()
            .filter(|l| !l.trim_start().starts_with(DASHBOARD_MARKER))
            .collect();
        *description = kept.join("\n").trim_end().to_owned();
    }
    let hash = content_hash(body);
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    match kind {
        Kind::Dashboard => {
            let description = obj
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim_end()
                .to_owned();
            let marker =
                format!("{DASHBOARD_MARKER} template_id={template_id} env={env} hash={hash}");
            let text = if description.is_empty() {
                marker
            } else {
                format!("{description}\n\n{marker}")
            };
            obj.insert("description".to_owned(), Value::String(text));
        }
        Kind::Monitor | Kind::Rule => {
            let mut tags: Vec<String> = obj
                .get("tags")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            for tag in extra_tags.iter().cloned().chain([
                MANAGED_TAG.to_owned(),
                format!("template_id:{template_id}"),
                format!("template_env:{env}"),
                format!("{HASH_TAG}{hash}"),
            ]) {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            obj.insert("tags".to_owned(), Value::from(tags));
        }
    }
}

/// The tag holding a monitor's or rule's [`content_hash`].
const HASH_TAG: &str = "template_hash:";

/// The [`content_hash`] an object was published with (none before hashes were kept).
fn hash_of(kind: Kind, object: &Value) -> Option<String> {
    match kind {
        Kind::Dashboard => object
            .get("description")
            .and_then(Value::as_str)?
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(DASHBOARD_MARKER))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("hash="))
            .map(str::to_owned),
        Kind::Monitor | Kind::Rule => object
            .get("tags")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(|t| t.strip_prefix(HASH_TAG))
            .map(str::to_owned),
    }
}

/// The identity (`template_id`, `env`) of a Datadog object, if we manage it.
pub(crate) fn identity_of(kind: Kind, object: &Value) -> Option<(String, String)> {
    match kind {
        Kind::Dashboard => {
            let description = object.get("description").and_then(Value::as_str)?;
            let line = description
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with(DASHBOARD_MARKER))?;
            let mut template_id = None;
            let mut env = None;
            for word in line.split_whitespace() {
                if let Some(v) = word.strip_prefix("template_id=") {
                    template_id = Some(v.to_owned());
                } else if let Some(v) = word.strip_prefix("env=") {
                    env = Some(v.to_owned());
                }
            }
            Some((template_id?, env?))
        }
        Kind::Monitor | Kind::Rule => {
            let tags: Vec<&str> = object
                .get("tags")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if !tags.contains(&MANAGED_TAG) {
                return None;
            }
            let find = |prefix: &str| {
                tags.iter()
                    .find_map(|t| t.strip_prefix(prefix))
                    .map(str::to_owned)
            };
            Some((find("template_id:")?, find("template_env:")?))
        }
    }
}

/// Every managed object of `env` in Datadog (dashboards fetched in full).
pub(crate) async fn fetch_managed(
    client: &ConfigClient,
    env: &str,
) -> Result<Vec<Remote>, ConfigApiError> {
    let mut remote = Vec::new();
    for kind in Kind::ALL {
        let api = kind.api();
        for summary in client.list(api).await? {
            let Some((template_id, object_env)) = identity_of(kind, &summary) else {
                continue;
            };
            if object_env != env {
                continue;
            }
            let Some(id) = api.id_of(&summary) else {
                continue;
            };
            let body = if kind == Kind::Dashboard {
                client.get(api, &id).await?
            } else {
                summary
            };
            remote.push(Remote {
                kind,
                template_id,
                id,
                body,
            });
        }
    }
    Ok(remote)
}

/// What publishing would do to one object.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Create(Desired),
    Update {
        desired: Desired,
        remote: Remote,
        drift: Vec<String>,
    },
    Unchanged {
        desired: Desired,
        remote: Remote,
    },
    /// Managed, but no template has its identity (or a duplicate of one that has).
    Orphan {
        remote: Remote,
        duplicate: bool,
    },
}

/// Matches `desired` with `remote` by identity.
pub(crate) fn plan(desired: &[Desired], remote: &[Remote]) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut used = vec![false; remote.len()];
    for d in desired {
        let found = remote
            .iter()
            .enumerate()
            .find(|(n, r)| !used[*n] && r.kind == d.kind && r.template_id == d.template_id);
        match found {
            None => changes.push(Change::Create(d.clone())),
            Some((n, r)) => {
                used[n] = true;
                let mut drift = Vec::new();
                let (want, have) = (hash_of(d.kind, &d.body), hash_of(r.kind, &r.body));
                if want != have {
                    drift.push(format!(
                        "the template changed since it was published (fields it no longer sets count too): published {}, now {}",
                        have.as_deref().unwrap_or("without a hash"),
                        want.as_deref().unwrap_or("-")
                    ));
                }
                compare(&d.body, &r.body, "", &mut drift);
                if drift.is_empty() {
                    changes.push(Change::Unchanged {
                        desired: d.clone(),
                        remote: r.clone(),
                    });
                } else {
                    changes.push(Change::Update {
                        desired: d.clone(),
                        remote: r.clone(),
                        drift,
                    });
                }
            }
        }
    }
    for (n, r) in remote.iter().enumerate() {
        if !used[n] {
            let duplicate = desired
                .iter()
                .any(|d| d.kind == r.kind && d.template_id == r.template_id);
            changes.push(Change::Orphan {
                remote: r.clone(),
                duplicate,
            });
        }
    }
    changes
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 120 {
        format!("{}…", text.chars().take(120).collect::<String>())
    } else {
        text
    }
}

/// Records where `actual` (Datadog) differs from `desired` (the template), ignoring keys only
/// Datadog has. Tags compare as sets.
pub(crate) fn compare(desired: &Value, actual: &Value, pointer: &str, drift: &mut Vec<String>) {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => {
            for (key, dv) in d {
                let here = format!("{pointer}/{}", escape_pointer(key));
                match a.get(key) {
                    None if dv.is_null() => {}
                    None => drift.push(format!(
                        "{here}: missing in Datadog (template: {})",
                        short(dv)
                    )),
                    Some(av) if key == "tags" => {
                        let set = |v: &Value| {
                            let mut tags: Vec<String> = v
                                .as_array()
                                .map(|a| a.iter().map(|t| t.to_string()).collect())
                                .unwrap_or_default();
                            tags.sort();
                            tags
                        };
                        if set(dv) != set(av) {
                            drift.push(format!(
                                "{here}: Datadog has {}, template has {}",
                                short(av),
                                short(dv)
                            ));
                        }
                    }
                    Some(av) => compare(dv, av, &here, drift),
                }
            }
        }
        (Value::Array(d), Value::Array(a)) if d.len() == a.len() => {
            for (n, (dv, av)) in d.iter().zip(a).enumerate() {
                compare(dv, av, &format!("{pointer}/{n}"), drift);
            }
        }
        (Value::Number(d), Value::Number(a)) if d.as_f64() == a.as_f64() => {}
        _ if desired == actual => {}
        _ => drift.push(format!(
            "{}: Datadog has {}, template has {}",
            if pointer.is_empty() { "/" } else { pointer },
            short(actual),
            short(desired)
        )),
    }
}

fn describe(kind: Kind, template_id: &str) -> String {
    format!("{} {template_id}", kind.api().name())
}

fn print_plan(changes: &[Change], out: &mut dyn Write) -> (usize, usize, usize, usize) {
    let (mut create, mut update, mut same, mut orphans) = (0, 0, 0, 0);
    for change in changes {
        let _ = match change {
            Change::Create(d) => {
                create += 1;
                writeln!(out, "  + create {}", describe(d.kind, &d.template_id))
            }
            Change::Update {
                desired,
                remote,
                drift,
            } => {
                update += 1;
                let _ = writeln!(
                    out,
                    "  ~ update {} (id {})",
                    describe(desired.kind, &desired.template_id),
                    remote.id
                );
                for line in drift {
                    let _ = writeln!(out, "      {line}");
                }
                Ok(())
            }
            Change::Unchanged { desired, remote } => {
                same += 1;
                writeln!(
                    out,
                    "  = unchanged {} (id {})",
                    describe(desired.kind, &desired.template_id),
                    remote.id
                )
            }
            Change::Orphan { remote, duplicate } => {
                orphans += 1;
                let why = if *duplicate {
                    "a duplicate of a managed object"
                } else {
                    "its template is gone"
                };
                writeln!(
                    out,
                    "  - orphan {} (id {}): {why}; --apply --prune deletes it",
                    describe(remote.kind, &remote.template_id),
                    remote.id
                )
            }
        };
    }
    (create, update, same, orphans)
}

/// `publish`: validate, plan, and with `apply` create and update (and with `prune` delete
/// orphans). Reports progress to `out`.
pub(crate) async fn publish(
    client: &ConfigClient,
    dir: &Path,
    env: &str,
    apply: bool,
    prune: bool,
    out: &mut dyn Write,
) -> Result<Outcome, String> {
    let desired = desired_objects(dir, env)?;
    let env = &canonical_env(dir, env);
    let _ = writeln!(
        out,
        "publish: environment {env} → {} ({} objects in the templates)",
        client.base_url(),
        desired.len()
    );

    // 1. Validate with Datadog first.
    let mut invalid: Vec<String> = Vec::new();
    for d in &desired {
        let result = match d.kind {
            Kind::Monitor => client.validate_monitor(&d.body).await,
            Kind::Rule => client.validate_rule(&d.body).await,
            Kind::Dashboard => continue,
        };
        match result.map_err(|e| e.to_string())? {
            Validation::Valid => {
                let _ = writeln!(out, "  validated {}", describe(d.kind, &d.template_id));
            }
            Validation::Invalid(errors) => {
                let _ = writeln!(
                    out,
                    "  INVALID {}: {}",
                    describe(d.kind, &d.template_id),
                    errors.join("; ")
                );
                invalid.push(d.template_id.clone());
            }
        }
    }

    // 2. Plan.
    let remote = fetch_managed(client, env)
        .await
        .map_err(|e| e.to_string())?;
    let changes = plan(&desired, &remote);
    let _ = writeln!(out, "plan:");
    let (create, update, same, orphans) = print_plan(&changes, out);
    let _ = writeln!(
        out,
        "plan: {create} to create, {update} to update, {same} unchanged, {orphans} orphaned, {} invalid",
        invalid.len()
    );
    if !apply {
        let _ = writeln!(
            out,
            "publish: dry run, nothing changed (run with --apply to apply)"
        );
        return Ok(if create + update + orphans + invalid.len() == 0 {
            Outcome::Clean
        } else {
            Outcome::Dirty
        });
    }

    // 3. Apply, one object at a time; a failure does not stop the others.
    let todo = changes
        .iter()
        .filter(|c| {
            matches!(c, Change::Create(_) | Change::Update { .. })
                || (prune && matches!(c, Change::Orphan { .. }))
        })
        .count();
    let mut done = 0;
    let mut failures = Vec::new();
    for change in &changes {
        let (label, result) = match change {
            Change::Create(d) if invalid.contains(&d.template_id) => {
                failures.push(format!(
                    "{}: not created, Datadog's validation rejected it",
                    describe(d.kind, &d.template_id)
                ));
                continue;
            }
            Change::Update { desired: d, .. } if invalid.contains(&d.template_id) => {
                failures.push(format!(
                    "{}: not updated, Datadog's validation rejected it",
                    describe(d.kind, &d.template_id)
                ));
                continue;
            }
            Change::Create(d) => {
                let result = client.create(d.kind.api(), &d.body).await.map(|created| {
                    format!(
                        "created {} (id {})",
                        describe(d.kind, &d.template_id),
                        d.kind.api().id_of(&created).unwrap_or_default()
                    )
                });
                (describe(d.kind, &d.template_id), result)
            }
            Change::Update {
                desired: d,
                remote: r,
                ..
            } => {
                let result = client
                    .update(d.kind.api(), &r.id, &d.body)
                    .await
                    .map(|_| format!("updated {} (id {})", describe(d.kind, &d.template_id), r.id));
                (describe(d.kind, &d.template_id), result)
            }
            Change::Orphan { remote: r, .. } if prune => {
                let result = client.delete(r.kind.api(), &r.id).await.map(|()| {
                    format!("deleted {} (id {})", describe(r.kind, &r.template_id), r.id)
                });
                (describe(r.kind, &r.template_id), result)
            }
            Change::Orphan { .. } | Change::Unchanged { .. } => continue,
        };
        done += 1;
        match result {
            Ok(line) => {
                let _ = writeln!(out, "  [{done}/{todo}] {line}");
            }
            Err(e) => {
                let _ = writeln!(out, "  [{done}/{todo}] FAILED {label}: {e}");
                failures.push(format!("{label}: {e}"));
            }
        }
    }
    if failures.is_empty() {
        let _ = writeln!(out, "publish: applied {done} change(s)");
        Ok(Outcome::Clean)
    } else {
        let _ = writeln!(
            out,
            "publish: {} of {} change(s) failed:",
            failures.len(),
            todo + invalid.len()
        );
        for f in &failures {
            let _ = writeln!(out, "  {f}");
        }
        Ok(Outcome::Dirty)
    }
}

/// `diff`: reports drift; [`Outcome::Dirty`] when any object differs, is missing or orphaned.
pub(crate) async fn diff(
    client: &ConfigClient,
    dir: &Path,
    env: &str,
    out: &mut dyn Write,
) -> Result<Outcome, String> {
    let desired = desired_objects(dir, env)?;
    let env = &canonical_env(dir, env);
    let remote = fetch_managed(client, env)
        .await
        .map_err(|e| e.to_string())?;
    let changes = plan(&desired, &remote);
    let _ = writeln!(out, "diff: environment {env} at {}", client.base_url());
    let (create, update, same, orphans) = print_plan(&changes, out);
    if create + update + orphans == 0 {
        let _ = writeln!(out, "diff: no drift ({same} objects in sync)");
        Ok(Outcome::Clean)
    } else {
        let _ = writeln!(
            out,
            "diff: DRIFT: {create} missing in Datadog, {update} changed in Datadog, {orphans} orphaned ({same} in sync)"
        );
        Ok(Outcome::Dirty)
    }
}

/// Fields Datadog sets itself; `pull` leaves them out so the files can be published again.
const READ_ONLY: &[&str] = &[
    "id",
    "url",
    "author_handle",
    "author_name",
    "created_at",
    "modified_at",
    "created",
    "modified",
    "creator",
    "deleted",
    "org_id",
    "overall_state",
    "overall_state_modified",
    "matching_downtimes",
    "state",
    "multi",
    "createdAt",
    "creationAuthorId",
    "updateAuthorId",
    "isDefault",
    "isDeleted",
    "isDeprecated",
    "version",
    "defaultTags",
    "deleted_at",
];

/// `pull`: writes every managed object of `env` to `<out_dir>/<kind>/<name>.json`, as Datadog
/// holds it (read-only fields left out).
pub(crate) async fn pull(
    client: &ConfigClient,
    dir: &Path,
    env: &str,
    out_dir: &Path,
    out: &mut dyn Write,
) -> Result<Outcome, String> {
    let env = &canonical_env(dir, env);
    let remote = fetch_managed(client, env)
        .await
        .map_err(|e| e.to_string())?;
    let mut written = 0;
    for r in &remote {
        let mut body = r.body.clone();
        if let Value::Object(map) = &mut body {
            let kept: Map<String, Value> = std::mem::take(map)
                .into_iter()
                .filter(|(k, _)| !READ_ONLY.contains(&k.as_str()))
                .collect();
            *map = kept;
        }
        let name = r.template_id.rsplit('/').next().unwrap_or(&r.template_id);
        if name.is_empty() || name.contains("..") || name.contains(['/', '\\']) {
            let _ = writeln!(
                out,
                "  skipped {} (id {}): unusable template id",
                r.kind.api().name(),
                r.id
            );
            continue;
        }
        let folder = out_dir.join(r.kind.dir());
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        let path = folder.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&body).map_err(|e| e.to_string())? + "\n";
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written += 1;
        let _ = writeln!(
            out,
            "  pulled {} (id {}) → {}",
            describe(r.kind, &r.template_id),
            r.id,
            path.display()
        );
    }
    let _ = writeln!(
        out,
        "pull: {written} object(s) written to {}",
        out_dir.display()
    );
    Ok(Outcome::Clean)
}
