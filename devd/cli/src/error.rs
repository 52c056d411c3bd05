//! How a failed command ends: its exit code and the text it prints.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage.

use stand_model::config::ConfigErrors;
use stand_model::plan::PlanError;
use stand_model::values::FileIssues;

/// Bad input or usage that is not a stand.toml or plan error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// 2 for bad input (stand.toml, unknown environment, usage), else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let bad_input = error.chain().any(|e| {
        e.is::<ConfigErrors>()
            || e.is::<PlanError>()
            || e.is::<Usage>()
            || e.is::<clap::Error>()
            || e.is::<FileIssues>()
    });
    if bad_input {
        2
    } else {
        1
    }
}

/// The text printed for a failed command: stand.toml errors one per line, as
/// `file:line:column: ...`, anything else as `error: ...` with its causes.
pub fn render_error(error: &anyhow::Error) -> String {
    if let Some(errors) = error.downcast_ref::<ConfigErrors>() {
        let n = errors.0.len();
        let noun = if n == 1 { "error" } else { "errors" };
        return format!("{errors}\nerror: stand.toml is invalid ({n} {noun})");
    }
    if let Some(issues) = error.chain().find_map(|e| e.downcast_ref::<FileIssues>()) {
        let n = issues.0.len();
        let noun = if n == 1 { "file disagrees" } else { "files disagree" };
        return format!("{issues}\nerror: Helm values {noun} with stand.toml ({n})");
    }
    format!("error: {error:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&anyhow::Error::new(Usage("x".into()))), 2);
        let plan_err = PlanError::UnknownEnv {
            env: "x".into(),
            valid: vec![],
        };
        assert_eq!(exit_code(&anyhow::Error::new(plan_err)), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("helm failed")), 1);
    }
}
