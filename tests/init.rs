//! The operator's first commands against the real binary: `dockwire init`
//! writes a config `check-config` accepts, with a mode-600 secret and an
//! admin whose printed password logs in (and refuses to overwrite
//! anything); `dockwire keygen --name --hub` prints `[[agents]]` lines that
//! the hub takes and a command whose key connects a real agent.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn dockwire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(args)
        .output()
        .expect("run dockwire")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value after `label` on a line of `out`.
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .trim()
}

fn login(d: &Daemon, user: &str, password: &str) -> u16 {
    let body = json!({"username": user, "password": password}).to_string();
    let req = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        d.addr,
        body.len()
    );
    split_response(&raw_request(d.addr, req.as_bytes()).unwrap()).0
}

/// `init` into `dir`, then the daemon on a free port with that config.
fn init_and_serve(dir: &Path) -> (Daemon, String, String) {
    let config = dir.join("etc/dockwire.toml");
    let out = dockwire(&["init", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let password = field(&printed, "password:").to_owned();
    let check = dockwire(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("browser auth on"), "{}", text(&check));
    // The same config on a port of this test.
    let port = free_port();
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        written.replace(
            "listen = \"127.0.0.1:7575\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let d = Daemon::start_at(config, port, dir.to_path_buf(), &[]);
    (d, password, printed)
}

#[test]
fn init_writes_a_secure_config_whose_admin_logs_in_and_never_overwrites() {
    let dir = temp_dir("init");
    let (d, password, printed) = init_and_serve(&dir);
    let etc = dir.join("etc");
    let mode = |p: &str| std::fs::metadata(etc.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("jwt.secret"), 0o600);
    assert_eq!(
        mode("dockwire.toml") & 0o007,
        0,
        "the config is world-readable"
    );
    assert!(printed.contains("http://127.0.0.1:7575/"), "{printed}");
    assert!(printed.contains("dockwire keygen --name"), "{printed}");
    assert!(printed.contains("[tls]"), "{printed}");
    // The password is not in any file (only its hash is).
    let config = std::fs::read_to_string(etc.join("dockwire.toml")).unwrap();
    assert!(!config.contains(&password) && config.contains("$argon2id$"));
    // Every section an operator may want is there, commented.
    for key in [
        "# [tls]",
        "# [limits]",
        "# [[alerts]]",
        "# [[notifiers]]",
        "# [docker]",
    ] {
        assert!(config.contains(key), "{key} missing:\n{config}");
    }

    assert_eq!(login(&d, "admin", &password), 200);
    assert_eq!(login(&d, "admin", "not-the-password"), 401);

    // A second init refuses and changes nothing.
    let before = std::fs::read(etc.join("jwt.secret")).unwrap();
    let again = dockwire(&[
        "init",
        "--config",
        etc.join("dockwire.toml").to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("exists already"), "{}", text(&again));
    assert_eq!(std::fs::read(etc.join("jwt.secret")).unwrap(), before);
}

#[test]
fn keygen_prints_lines_the_hub_takes_and_a_command_that_connects() {
    let dir = temp_dir("keygen");
    let (mut d, _, _) = init_and_serve(&dir);
    let hub_url = format!("ws://127.0.0.1:{}/api/v1/agents/ws", d.addr.port());
    let out = dockwire(&["keygen", "--name", "web \"1\"", "--hub", &hub_url]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = printed
        .split('\'')
        .find(|s| s.starts_with("dwk_"))
        .unwrap_or_else(|| panic!("no key in:\n{printed}"))
        .to_owned();
    assert!(
        printed.contains(&format!("dockwire agent --hub {hub_url} --api-key-file")),
        "{printed}"
    );
    assert!(printed.contains("[Service]") && printed.contains("LoadCredential="));
    // The [[agents]] lines, as printed, go into the hub's config.
    let lines: String = printed
        .lines()
        .skip_while(|l| !l.starts_with("[[agents]]"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(lines.contains("web \"1\""), "{lines}");
    let config = d.config_path.clone();
    let mut text_now = std::fs::read_to_string(&config).unwrap();
    text_now.push('\n');
    text_now.push_str(&lines);
    std::fs::write(&config, text_now).unwrap();
    let check = dockwire(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(text(&check).contains("1 agent key(s)"), "{}", text(&check));
    d.terminate(Duration::from_secs(5));
    let port = d.addr.port();
    let d = Daemon::start_at(config, port, dir.clone(), &[]);

    // The printed command's key connects a real agent.
    let key_file = dir.join("agent.key");
    std::fs::write(&key_file, &key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(["agent", "--no-docker", "--hub", &hub_url, "--api-key-file"])
        .arg(&key_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("agent \"web \\\"1\\\"\" connected") {
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the agent never connected; log:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let _ = agent.wait();

    // ws:// to another host is not printed: the key would cross in clear.
    let out = dockwire(&[
        "keygen",
        "--name",
        "x",
        "--hub",
        "ws://hub.example:7575/api/v1/agents/ws",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("wss://"), "{}", text(&out));
    let out = dockwire(&["keygen", "--name", ""]);
    assert!(!out.status.success());
}
