//! `copains`: run the platform, print its configuration, rotate its keys, administer it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use copains::{Config, LogFormat};
use copains_backend::store::admin::AdminOutcome;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "copains", version, about = "LesCopains: self-hostable, end-to-end encrypted chat and voice")]
struct Cli {
    /// Configuration file (default: ./copains.toml if it exists).
    #[arg(long, short, global = true, env = "COPAINS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run API, gateway and web client in this process (SQLite under ./data by default).
    Serve {
        /// Address to listen on (overrides `bind`).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Manage the server key file.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Administer the platform.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make USERNAME a platform admin: promote the account, or create it with the password
    /// read from standard input (there is no default password).
    CreateAdmin {
        /// The account's username.
        username: String,
    },
    /// Set USERNAME's platform role (member, moderator or admin), admins included: how an admin
    /// is demoted. A running server applies it within 30 seconds.
    SetRole {
        /// The account's username.
        username: String,
        /// member, moderator or admin.
        role: String,
    },
    /// Rotate the key file's data key, which seals what the database keeps about clients:
    /// every sealed value is sealed again under a new key, while the server runs (it picks the
    /// new key up within a minute). The key before is kept until the next rotation.
    RotateKey,
    /// Snapshot the SQLite database into FILE while the server runs (for PostgreSQL, use
    /// pg_dump). Back the key file up too, kept apart.
    Backup {
        /// A new file.
        file: PathBuf,
    },
    /// Put the database of a backup in place of this data directory's (stop the server
    /// first); the current one is kept as copains.db.before-restore.
    Restore {
        /// A file made by `copains admin backup`.
        file: PathBuf,
    },
    /// Remove now what the housekeeping job removes: expired sessions and link requests, old
    /// envelopes, audit entries and addresses past their retention, ended bans, and guest
    /// accounts whose time is up.
    Prune,
    /// Print the database's figures.
    Stats,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Start signing access tokens with a new key; earlier keys keep verifying the tokens they
    /// signed. Restart the server afterwards.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}\nhint: check copains.toml and COPAINS_* variables; `copains config` prints what is in effect");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Config => match config.redacted_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Keys { action: KeysAction::Rotate } => match copains::keyfile::rotate(&config.key_file()) {
            Ok(kid) => {
                println!("new signing key {kid} in {}; restart the server to use it", config.key_file().display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Admin { action: AdminAction::CreateAdmin { username } } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(copains::admin::create_admin(&config, &username, copains::admin::password_from_stdin)) {
                Ok(AdminOutcome::Created(id)) => println!("created {username} (id {id}) as a platform admin"),
                Ok(AdminOutcome::Promoted(id)) => println!("{username} (id {id}) is now a platform admin"),
                Ok(AdminOutcome::AlreadyAdmin(id)) => println!("{username} (id {id}) was a platform admin already"),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Admin { action: AdminAction::SetRole { username, role } } => {
            let Some(role) = copains_client_core::api::PlatformRole::parse(&role) else {
                eprintln!("error: the role must be member, moderator or admin");
                return ExitCode::from(2);
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(copains::admin::set_role(&config, &username, role)) {
                Ok(before) => {
                    println!(
                        "{username}: {} → {} (a running server applies it within 30 seconds)",
                        before.as_str(),
                        role.as_str()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin { action: AdminAction::RotateKey } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message("sealing again");
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            match runtime.block_on(copains::admin::rotate_key(&config, progress)) {
                Ok(r) => {
                    bar.finish_and_clear();
                    println!(
                        "data key {} now seals; {} value(s) sealed again, {} unreadable erased; keys removed: {:?}",
                        r.new_key, r.resealed, r.erased, r.dropped
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    bar.abandon();
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin { action: AdminAction::Backup { file } } => run_admin(|| async {
            let bar = spinner("taking a snapshot");
            let held = copains::admin::backup(&config, &file).await;
            bar.finish_and_clear();
            let held = held?;
            println!("backup written to {}: {}", file.display(), describe(&held));
            println!("keep the key file ({}) backed up too, apart from this file", config.key_file().display());
            Ok(())
        }),
        Command::Admin { action: AdminAction::Restore { file } } => run_admin(|| async {
            let bar = spinner("checking and restoring");
            let held = copains::admin::restore(&config, &file).await;
            bar.finish_and_clear();
            let held = held?;
            println!("restored {}: {}", file.display(), describe(&held));
            Ok(())
        }),
        Command::Admin { action: AdminAction::Prune } => run_admin(|| async {
            let p = copains::admin::prune(&config).await?;
            println!(
                "removed {} expired session(s), {} envelope(s), {} link request(s), {} audit entr(ies), {} address(es), {} ended ban(s), {} guest account(s)",
                p.sessions, p.envelopes, p.link_requests, p.audit_entries, p.addresses, p.bans, p.guests
            );
            Ok(())
        }),
        Command::Admin { action: AdminAction::Stats } => run_admin(|| async {
            let held = copains::admin::stats(&config).await?;
            println!("{}", describe(&held));
            Ok(())
        }),
        Command::Serve { bind, data_dir } => {
            if let Some(bind) = bind {
                config.bind = bind;
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            init_logging(&config);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs an admin command on a fresh runtime; its error is printed.
fn run_admin<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn spinner(message: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn describe(c: &copains::admin::Contents) -> String {
    format!(
        "{} account(s), {} server(s), {} channel(s), {} message(s), {} queued envelope(s), {} session(s), {:.1} MiB",
        c.users,
        c.servers,
        c.channels,
        c.messages,
        c.envelopes,
        c.sessions,
        c.bytes as f64 / (1024.0 * 1024.0)
    )
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = copains::start(config).await?;
    println!("LesCopains is running on http://{}", running.local_addr());
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_env("COPAINS_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
