//! What `devd env list`, `devd plan` and `devd context` print, computed from the model
//! alone (the Tilt extension's tests answer its `local('devd ...')` calls with these).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use stand_model::config::{DbMode, Stand, Target};
use stand_model::plan::{self, Plan, PlanError};

// ---- env list -------------------------------------------------------------------------

/// One row of `devd env list --json`.
#[derive(Debug, Serialize)]
pub struct EnvSummary {
    pub name: String,
    pub default: bool,
    pub description: String,
    pub target: Target,
    pub services: Vec<String>,
    /// Per service (sorted by name) its database mode.
    pub databases: BTreeMap<String, DbMode>,
    pub live_sync: bool,
    pub values: Vec<String>,
}

/// The environments of a stand, sorted by name.
pub fn env_summaries(stand: &Stand) -> Result<Vec<EnvSummary>, PlanError> {
    let default = stand.section().default_env.get_ref();
    stand
        .env_names()
        .into_iter()
        .map(|name| {
            // The triple plays no part in a summary.
            let p = plan::resolve(stand, &name, "")?;
            Ok(EnvSummary {
                default: &name == default,
                name,
                description: p.description,
                target: p.target,
                services: p.services.iter().map(|s| s.name.clone()).collect(),
                databases: p
                    .services
                    .iter()
                    .map(|s| (s.name.clone(), s.database.mode))
                    .collect(),
                live_sync: p.live_sync,
                values: p.values,
            })
        })
        .collect()
}

/// The table `devd env list` prints (without `--json`).
pub fn env_table(rows: &[EnvSummary]) -> String {
    let mut table = vec![[
        "ENV".to_owned(),
        "TARGET".to_owned(),
        "SERVICES".to_owned(),
        "DATABASE".to_owned(),
        "LIVE SYNC".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for r in rows {
        let mut modes: Vec<String> = r.databases.values().map(ToString::to_string).collect();
        modes.dedup();
        table.push([
            if r.default {
                format!("{} *", r.name)
            } else {
                r.name.clone()
            },
            r.target.to_string(),
            r.services.join(","),
            modes.join(","),
            if r.live_sync { "on" } else { "off" }.to_owned(),
            r.description.clone(),
        ]);
    }
    let mut out = render_table(&table);
    out.push_str("(* = default_env)\n");
    out
}

fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---- plan -----------------------------------------------------------------------------

/// The human form of a plan.
pub fn plan_summary(p: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "env        {}{}",
        p.env,
        if p.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", p.description)
        }
    );
    let _ = writeln!(s, "target     {}", p.target);
    let _ = writeln!(
        s,
        "helm       release {} in namespace {}, chart {}",
        p.release, p.namespace, p.chart
    );
    let _ = writeln!(
        s,
        "values     {}",
        if p.values.is_empty() {
            "(none)".to_owned()
        } else {
            p.values.join(", ")
        }
    );
    let _ = writeln!(s, "live sync  {}", if p.live_sync { "on" } else { "off" });
    let _ = writeln!(s, "api        http://{}:{}", p.api.host, p.api.port);
    let _ = writeln!(s, "build      {}", p.build.target_triple);
    let _ = writeln!(s, "services");
    let mut rows = Vec::new();
    for svc in &p.services {
        let db = &svc.database;
        let db_text = match db.mode {
            DbMode::None => "no database".to_owned(),
            DbMode::InCluster => format!(
                "in-cluster {}:{}/{} ({})",
                db.host.as_deref().unwrap_or("?"),
                db.port.unwrap_or(0),
                db.name.as_deref().unwrap_or("?"),
                match (db.persistence, db.size.as_deref()) {
                    (Some(true), Some(size)) => format!("{size} volume"),
                    _ => "no persistence".to_owned(),
                }
            ),
            DbMode::External => format!(
                "external {}:{}/{} (password: secret {})",
                db.host.as_deref().unwrap_or("?"),
                db.port.unwrap_or(0),
                db.name.as_deref().unwrap_or("?"),
                db.secret
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), |r| format!("{}/{}", r.name, r.key)),
            ),
        };
        rows.push([
            format!("  {}", svc.name),
            format!(":{}", svc.port),
            format!("{}:{}", svc.image.repository, svc.image.tag),
            format!("x{}", svc.replicas),
            db_text,
        ]);
    }
    s.push_str(&render_table(&rows));
    s
}

// ---- context --------------------------------------------------------------------------

/// What `devd context --json` prints.
#[derive(Debug, Serialize)]
pub struct ContextVerdict {
    pub env: String,
    /// `null` when no kubeconfig names a current context.
    pub context: Option<String>,
    pub allowed: bool,
    /// The environment's patterns (stand.toml `contexts`, or the default).
    pub contexts: Vec<String>,
    /// Why not, when not allowed.
    pub reason: Option<String>,
}

/// The verdict on `context` (`None`: no current context) for environment `env`.
pub fn context_verdict(stand: &Stand, env: &str, context: Option<String>) -> Result<ContextVerdict, PlanError> {
    let plan = plan::resolve(stand, env, "")?;
    let (allowed, reason) = match &context {
        None => (false, Some("no kubeconfig names a current context (KUBECONFIG, ~/.kube/config)".to_owned())),
        Some(c) => match plan.allows_context(c) {
            Ok(()) => (true, None),
            Err(refused) => (false, Some(refused.to_string())),
        },
    };
    Ok(ContextVerdict { env: env.to_owned(), context, allowed, contexts: plan.contexts, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = render_table(&[
            ["a".to_owned(), "bb".to_owned()],
            ["ccc".to_owned(), "d".to_owned()],
        ]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }
}
