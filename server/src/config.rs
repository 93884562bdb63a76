//! Configuration: defaults, then `copains.toml`, then `COPAINS_*` environment variables
//! (nested keys with `__`, e.g. `COPAINS_GATEWAY__HEARTBEAT_INTERVAL_MS=20000`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use copains_backend::ids::NodeId;
use copains_backend::BackendConfig;
use copains_signaling::GatewayConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::web::WebConfig;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration of a `copains` process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (API, gateway and metrics on one port).
    pub bind: SocketAddr,
    /// Directory for the SQLite database and the key file.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite at `<data_dir>/copains.db`.
    pub database_url: Option<String>,
    /// Maximum database connections.
    pub database_max_connections: u32,
    /// Key file (created with mode 0600 on first run); default `<data_dir>/copains.key`.
    pub key_file: Option<PathBuf>,
    /// Node id (0–1023) for id generation; must differ between nodes sharing a database.
    /// Values out of range are refused when the configuration is loaded.
    pub node_id: NodeId,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `copains=debug,info`.
    pub log_level: String,
    /// Seconds to wait for connections to close on shutdown.
    pub shutdown_grace_secs: u64,
    /// REST API settings.
    pub api: BackendConfig,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// The web client's files.
    pub web: WebConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_max_connections: 16,
            key_file: None,
            node_id: NodeId::default(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_grace_secs: 10,
            api: BackendConfig::default(),
            gateway: GatewayConfig::default(),
            web: WebConfig::default(),
        }
    }
}

impl Config {
    /// Loads defaults → `file` (if it exists; `copains.toml` when `None`) → environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let path = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("copains.toml"));
        if file.is_some() && !path.exists() {
            return Err(Box::new(figment::Error::from(format!("configuration file {} does not exist", path.display()))));
        }
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(Env::prefixed("COPAINS_").split("__").ignore(&["log", "config", "test_database_url", "test_redis_url"]))
            .extract()
            .map_err(Box::new)
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("copains.db").display()))
    }

    /// The key file in effect.
    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.data_dir.join("copains.key"))
    }

    /// The configuration as TOML with secrets (database password) redacted.
    pub fn redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        shown.database_url = Some(redact_url(&self.database_url()));
        if shown.gateway.voice.turn_secret.is_some() {
            shown.gateway.voice.turn_secret = Some("***".into());
        }
        shown.key_file = Some(self.key_file());
        toml::to_string_pretty(&shown)
    }
}

/// Replaces the password of `scheme://user:password@host/…` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Config, Box<figment::Error>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("copains.toml");
        std::fs::write(&path, text).expect("write config");
        Config::load(Some(&path))
    }

    #[test]
    fn node_ids_out_of_range_are_refused_at_load() {
        let ok = load_toml("node_id = 1023\n").expect("1023 is the largest node id");
        assert_eq!(ok.node_id.get(), 1023);
        for bad in ["node_id = 1024", "node_id = 70000", "node_id = -1"] {
            let err = load_toml(bad).expect_err(bad).to_string();
            assert!(err.contains("node_id"), "{bad}: {err}");
        }
        let err = load_toml("node_id = 1024").expect_err("1024").to_string();
        assert!(err.contains("0 to 1023"), "the message says what is allowed: {err}");
    }

    #[test]
    fn trusted_proxies_are_parsed_and_bad_entries_refused_at_load() {
        let ok = load_toml("[api]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\"]\n").expect("valid list");
        assert_eq!(ok.api.trusted_proxies.len(), 3);
        assert!(ok.redacted_toml().expect("toml").contains("\"192.0.2.7/32\""), "printed back as CIDR blocks");
        let err = load_toml("[api]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n").expect_err("bad prefix").to_string();
        assert!(err.contains("trusted_proxies") && err.contains("10.0.0.0/40"), "{err}");
        let err = load_toml("[api]\ntrusted_proxies = [\"proxy.internal\"]\n").expect_err("a name").to_string();
        assert!(err.contains("proxy.internal"), "{err}");
    }

    #[test]
    fn the_web_directory_defaults_to_web_dist_and_can_be_moved() {
        let default = load_toml("").expect("empty file");
        assert_eq!(default.web.dir, PathBuf::from("web/dist"));
        assert!(default.redacted_toml().expect("toml").contains("[web]\ndir = \"web/dist\""), "shown by `copains config`");
        let moved = load_toml("[web]\ndir = \"/srv/copains/web\"\n").expect("moved");
        assert_eq!(moved.web.dir, PathBuf::from("/srv/copains/web"));
        assert!(load_toml("[web]\ndirectory = \"x\"\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_turn_secret_is_never_shown() {
        let mut config = Config::default();
        config.gateway.voice.turn_secret = Some("s3cret-for-coturn".into());
        let shown = config.redacted_toml().expect("toml");
        assert!(!shown.contains("s3cret-for-coturn"), "{shown}");
        assert!(shown.contains("turn_secret = \"***\""), "{shown}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/copains"), "postgres://app:***@db:5432/copains");
        assert_eq!(redact_url("postgres://app@db/copains"), "postgres://app@db/copains");
        assert_eq!(redact_url("sqlite://./data/copains.db"), "sqlite://./data/copains.db");
    }
}
