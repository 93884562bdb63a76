//! The `copains` binary as a user runs it: `copains config`, and `copains serve` from first
//! start to a graceful stop on SIGTERM.

#[path = "common/binary.rs"]
mod binary;

use std::process::Command;
use std::time::Duration;

use binary::{clean_env, Served, BIN};

#[test]
fn config_layers_defaults_file_and_environment_and_redacts_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("copains.toml"), "bind = \"0.0.0.0:9000\"\n[gateway]\nresume_window_ms = 60000\n")
        .expect("write config");
    let out = clean_env(&mut Command::new(BIN))
        .arg("config")
        .current_dir(dir.path())
        .env("COPAINS_DATABASE_URL", "postgres://app:s3cret-pw@db.internal:5432/copains")
        .env("COPAINS_GATEWAY__HEARTBEAT_INTERVAL_MS", "20000")
        .env("COPAINS_LOG", "debug")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("bind = \"0.0.0.0:9000\""), "file value: {text}");
    assert!(text.contains("resume_window_ms = 60000"), "nested file value: {text}");
    assert!(text.contains("heartbeat_interval_ms = 20000"), "environment beats the file: {text}");
    assert!(text.contains("postgres://app:***@db.internal:5432/copains"), "{text}");
    assert!(!text.contains("s3cret-pw"), "password redacted");
    assert!(text.contains("memory_kib = 19456"), "defaults shown: {text}");

    let bad = clean_env(&mut Command::new(BIN))
        .arg("config")
        .current_dir(dir.path())
        .env("COPAINS_BIND", "not-an-address")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid configuration") && err.to_lowercase().contains("bind"), "{err}");
}

#[test]
fn serve_starts_from_nothing_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut served = Served::start(dir.path(), &data);
    let addr = served.addr.clone();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let base = format!("http://{addr}");
        let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
        assert_eq!(health.status(), 200);
        let client = copains_client_core::client::Client::new(&base);
        client.register("zoe", "a-very-secret-password", None).await.expect("register");
        client.me().await.expect("me");
    });

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("copains.key")).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file is private");
        assert!(data.join("copains.db").exists(), "SQLite database under the data directory");
    }

    served.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = served.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "server did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    served.collect_output();
    let lines = &served.lines;
    let logs: Vec<&String> = lines.iter().filter(|l| l.starts_with('{')).collect();
    assert!(!logs.is_empty(), "JSON logs with COPAINS_LOG_FORMAT=json");
    for line in &logs {
        let v: serde_json::Value = serde_json::from_str(line).expect("each log line is JSON");
        assert!(v["level"].is_string());
    }
    let all = lines.join("\n");
    assert!(all.contains("account registered"), "{all}");
    assert!(all.contains("stopped"), "graceful stop logged: {all}");
    assert!(!all.contains("a-very-secret-password"), "passwords never reach logs");
}

/// `copains admin create-admin`: the password comes on standard input (there is no default),
/// the account is created as platform admin and reaches the admin routes once the server runs;
/// run again, it says so; an existing member is promoted without a password.
#[test]
fn create_admin_makes_an_admin_from_the_command_line() {
    use std::io::Write;
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let run = |username: &str, stdin: &str| {
        let mut child = clean_env(&mut Command::new(BIN))
            .args(["admin", "create-admin", username])
            .current_dir(dir.path())
            .env("COPAINS_DATA_DIR", &data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No password: refused, nothing created.
    let (ok, _, err) = run("root", "");
    assert!(!ok && err.contains("no password on standard input"), "{err}");
    let (ok, _, err) = run("root", "short\n");
    assert!(!ok && err.contains("password"), "a password that breaks the rules: {err}");
    let (ok, out, err) = run("root", "a-long-admin-password\n");
    assert!(ok, "{err}");
    assert!(out.contains("created root") && out.contains("platform admin"), "{out}");
    let (ok, out, _) = run("root", "");
    assert!(ok && out.contains("was a platform admin already"), "{out}");

    let mut served = Served::start(dir.path(), &data);
    let base = format!("http://{}", served.addr);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let root = copains_client_core::client::Client::new(&base);
        root.login("root", "a-long-admin-password", None).await.expect("the admin signs in with the password given");
        let token = root.access_token().await.expect("token");
        let stats =
            reqwest::Client::new().get(format!("{base}/api/v1/admin/stats")).bearer_auth(&token).send().await.expect("stats");
        assert_eq!(stats.status(), 200);
        let member = copains_client_core::client::Client::new(&base);
        member.register("maud", "a-member-password", None).await.expect("register");
    });
    served.terminate();
    let _ = served.child.wait();
    // An existing member is promoted; standard input is not read.
    let (ok, out, err) = run("Maud", "");
    assert!(ok && out.contains("Maud") && out.contains("is now a platform admin"), "{out}{err}");

    // An admin is demoted from the command line only (no admin acts on another).
    let set_role = |args: &[&str]| {
        let out = clean_env(&mut Command::new(BIN))
            .args(["admin", "set-role"])
            .args(args)
            .current_dir(dir.path())
            .env("COPAINS_DATA_DIR", &data)
            .output()
            .expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, out, err) = set_role(&["root", "member"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("root: admin → member"), "{out}");
    let (code, _, err) = set_role(&["root", "emperor"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = set_role(&["nobody", "member"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no account named nobody"), "{err}");
}
