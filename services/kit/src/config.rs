//! Service configuration, read from the environment.
//!
//! `PORT` (default per service), and the database either as `DATABASE_URL` or as the
//! parts `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASSWORD`, `DB_SSLMODE`.
//! With neither, the service runs without a database.

use std::fmt;

/// Settings a service reads at start.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub port: u16,
    pub database: Option<DbSettings>,
}

/// How to reach the database. The password never appears in `Debug` output.
#[derive(Clone)]
pub struct DbSettings {
    pub config: tokio_postgres::Config,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field("host", &self.config.get_hosts())
            .field("port", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("environment variable {key} is required when {because} is set")]
    Missing { key: &'static str, because: &'static str },
}

impl ServiceConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env(default_port: u16) -> Result<Self, ConfigError> {
        Self::from_lookup(default_port, |key| std::env::var(key).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(
        default_port: u16,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let port = match get("PORT") {
            None => default_port,
            Some(raw) => raw.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                ConfigError::Invalid {
                    key: "PORT",
                    message: format!("{raw:?} is not a port number (1-65535)"),
                }
            })?,
        };
        let database = if let Some(url) = get("DATABASE_URL") {
            let config = url.parse::<tokio_postgres::Config>().map_err(|e| ConfigError::Invalid {
                key: "DATABASE_URL",
                // The URL may hold a password: name the problem, not the value.
                message: format!("not a valid PostgreSQL connection string ({e})"),
            })?;
            Some(DbSettings { config })
        } else if let Some(host) = get("DB_HOST") {
            let mut config = tokio_postgres::Config::new();
            config.host(&host);
            if let Some(raw) = get("DB_PORT") {
                let port = raw.trim().parse::<u16>().map_err(|_| ConfigError::Invalid {
                    key: "DB_PORT",
                    message: format!("{raw:?} is not a port number"),
                })?;
                config.port(port);
            }
            let user = get("DB_USER").ok_or(ConfigError::Missing { key: "DB_USER", because: "DB_HOST" })?;
            config.user(&user);
            config.dbname(get("DB_NAME").unwrap_or(user));
            if let Some(password) = lookup("DB_PASSWORD") {
                config.password(password);
            }
            if let Some(mode) = get("DB_SSLMODE") {
                config.ssl_mode(match mode.as_str() {
                    "disable" => tokio_postgres::config::SslMode::Disable,
                    "prefer" => tokio_postgres::config::SslMode::Prefer,
                    other => {
                        return Err(ConfigError::Invalid {
                            key: "DB_SSLMODE",
                            message: format!("{other:?} is not supported; use disable or prefer"),
                        })
                    }
                });
            }
            Some(DbSettings { config })
        } else {
            None
        };
        Ok(Self { port, database })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ServiceConfig::from_lookup(5001, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_to_the_service_port_and_no_database() {
        let c = from(&[]).unwrap();
        assert_eq!(c.port, 5001);
        assert!(c.database.is_none());
    }

    #[test]
    fn reads_database_url() {
        let c = from(&[("PORT", "6000"), ("DATABASE_URL", "postgres://u:secret@db:5433/app")]).unwrap();
        assert_eq!(c.port, 6000);
        let db = c.database.unwrap();
        assert_eq!(db.config.get_dbname(), Some("app"));
        assert_eq!(db.config.get_ports(), &[5433]);
        assert!(!format!("{db:?}").contains("secret"));
    }

    #[test]
    fn reads_database_parts() {
        let c = from(&[("DB_HOST", "pg"), ("DB_PORT", "5432"), ("DB_USER", "svc"), ("DB_PASSWORD", "pw")]).unwrap();
        let db = c.database.unwrap();
        assert_eq!(db.config.get_user(), Some("svc"));
        assert_eq!(db.config.get_dbname(), Some("svc"));
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        for (pairs, key) in [
            (vec![("PORT", "http")], "PORT"),
            (vec![("PORT", "0")], "PORT"),
            (vec![("DATABASE_URL", "postgres://u@h:notaport/db")], "DATABASE_URL"),
            (vec![("DB_HOST", "h")], "DB_USER"),
            (vec![("DB_HOST", "h"), ("DB_USER", "u"), ("DB_PORT", "x")], "DB_PORT"),
            (vec![("DB_HOST", "h"), ("DB_USER", "u"), ("DB_SSLMODE", "verify-full")], "DB_SSLMODE"),
        ] {
            let err = from(&pairs).unwrap_err().to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
        }
    }
}
