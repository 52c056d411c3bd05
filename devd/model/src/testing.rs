//! For the crate's unit tests: a small stand (two services, `web` without a database
//! and `api` with one) to which each test adds its environments.

use std::path::Path;

use crate::config::Stand;

/// `[stand]` and the two services; no `[env.*]` yet.
pub const SERVICES: &str = r#"
[stand]
name = "s"
chart = "helm/app"
release = "s"
default_env = "a"

[services.web]
package = "web"
path = "services/web"
port = 5001
image = "s/web"

[services.api]
package = "api"
path = "services/api"
port = 5002
database = true
image = "s/api"
"#;

/// [`SERVICES`] followed by `envs`, parsed (a test's own text that does not parse is a
/// bug of the test: it panics with the diagnostics).
pub fn stand(envs: &str) -> Stand {
    match Stand::parse(&format!("{SERVICES}{envs}"), Path::new("stand.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}
