//! Reload (SIGHUP) driven in memory: what a new config revokes is closed
//! with 1008 at once, everything else stays connected, and what it adds
//! (keys, rules) works at once.

use super::*;

const OTHER_KEY: &str = "another-agent-key-for-tests";
const NEW_KEY: &str = "a-new-agent-key-for-tests";
/// A valid argon2id PHC string (its password is never checked here).
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    7oS0TrtQI1GFpDrzU87XYgEP7Hzk8HDM5Dn7kdWrkio";

fn agent_entry(name: &str, key: &str, sid: &str) -> String {
    format!(
        "[[agents]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nserver_id = \"{sid}\"\n",
        hash_api_key(key)
    )
}

fn user_entry(name: &str, role: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{HASH}\"\n")
}

/// `server_id = "local"`, the secret at `secret` (if any), then `body`.
fn config_text(secret: Option<&PathBuf>, body: &str) -> String {
    let auth = secret.map_or(String::new(), |p| {
        format!("[auth]\njwt_secret_file = {:?}\n", p.display().to_string())
    });
    format!("server_id = \"local\"\n{body}\n{auth}")
}

fn parse(text: &str) -> Config {
    let f: FileConfig = toml::from_str(text).unwrap();
    Config::from_file(f, &Overrides::default()).unwrap()
}

impl Harness {
    /// Reloads to `text` the way the loop does (merged into the running config).
    fn reload(&mut self, text: &str) {
        let (config, _) = self.hub.config().reloaded(parse(text)).unwrap();
        self.input(Input::Reload(Box::new(Reload {
            config,
            notifier: None,
            notifiers_changed: false,
        })));
    }

    fn agent_with(&mut self, key: &str) -> (ConnId, Vec<Value>) {
        let c = self.open(Endpoint::Agent, None);
        self.send(c, &json!({"type": "auth", "api_key": key}));
        let v = self.take(c);
        (c, v)
    }

    fn browser_as(&mut self, sub: &str, secret: &[u8]) -> ConnId {
        let c = self.open(Endpoint::Browser, None);
        let t = sign_token(
            secret,
            sub,
            Role::Admin,
            Duration::from_secs(3600),
            unix_now(),
        )
        .unwrap();
        self.send(c, &json!({"type": "auth", "token": t}));
        assert_eq!(self.types(c)[0], "auth_success");
        c
    }

    fn close_code(&self, conn: ConnId) -> Option<u16> {
        self.out.closed(conn).map(|c| c.0)
    }
}

#[test]
fn a_removed_agent_key_closes_that_agent_only() {
    let secret = temp_file("secret", SECRET);
    let both = format!(
        "{}{}",
        agent_entry("web-1", AGENT_KEY, "srv-1"),
        agent_entry("web-2", OTHER_KEY, "srv-2")
    );
    let mut h = Harness::new(&config_text(Some(&secret), &both));
    let a1 = h.agent();
    let (a2, v) = h.agent_with(OTHER_KEY);
    assert_eq!(v[0]["type"], "auth_success");
    let b = h.browser(Role::Viewer);
    assert_eq!(h.stats.agents_connected, 2);

    h.reload(&config_text(
        Some(&secret),
        &agent_entry("web-2", OTHER_KEY, "srv-2"),
    ));
    assert_eq!(h.close_code(a1), Some(1008));
    assert_eq!(h.close_code(a2), None);
    assert_eq!(h.close_code(b), None);
    assert!(
        h.hub.session(a1).is_none(),
        "the revoked agent left the hub"
    );
    assert_eq!(h.stats.agents_connected, 1);
    let st = h.hub.state();
    assert!(
        !st.servers.contains_key("srv-1"),
        "its server left the directory"
    );
    assert!(st.servers.contains_key("srv-2"));
    // The browser heard srv-1 go offline.
    let changes: Vec<Value> = h
        .take(b)
        .into_iter()
        .filter(|v| v["type"] == "server_state_change")
        .collect();
    assert!(
        changes
            .iter()
            .any(|v| v["server"]["server_id"] == "srv-1" && v["server"]["online"] == false),
        "{changes:?}"
    );
    // The revoked key is refused from now on; the kept one still works.
    let (c, v) = h.agent_with(AGENT_KEY);
    assert_eq!(v[0]["type"], "error", "{v:?}");
    assert_eq!(h.close_code(c), Some(1008));
    let (_, v) = h.agent_with(OTHER_KEY);
    assert_eq!(v[0]["type"], "auth_success", "{v:?}");
}

#[test]
fn a_new_agent_key_works_at_once_and_unchanged_keys_stay() {
    let mut h = Harness::new(&format!("server_id = \"local\"\n{}", agent_config()));
    let a1 = h.agent();
    let (c, _) = h.agent_with(NEW_KEY);
    assert_eq!(h.close_code(c), Some(1008));
    h.reload(&format!(
        "server_id = \"local\"\n{}{}",
        agent_config(),
        agent_entry("new", NEW_KEY, "srv-new")
    ));
    assert_eq!(h.close_code(a1), None, "an unchanged key stays connected");
    assert!(h.hub.state().servers.contains_key("srv-new"));
    let (c, v) = h.agent_with(NEW_KEY);
    assert_eq!(v[0]["type"], "auth_success", "{v:?}");
    assert_eq!(v[0]["server_id"], "srv-new");
    assert_eq!(h.close_code(c), None);
}

#[test]
fn a_new_secret_closes_sessions_signed_by_the_old_one() {
    let old = temp_file("secret", SECRET);
    let mut h = Harness::new(&config_text(Some(&old), &agent_config()));
    let b1 = h.browser(Role::Admin);
    let b2 = h.browser(Role::Viewer);
    let a = h.agent();
    // Another change with the same secret (a copy of the file): nobody goes.
    let copy = temp_file("secret", SECRET);
    h.reload(&config_text(Some(&copy), &agent_config()));
    assert_eq!((h.close_code(b1), h.close_code(b2)), (None, None));

    let new_secret = b"a-brand-new-secret-0123456789abcdef";
    let new = temp_file("secret", new_secret);
    h.reload(&config_text(Some(&new), &agent_config()));
    for b in [b1, b2] {
        assert_eq!(h.close_code(b), Some(1008));
        let v = h.take(b);
        assert!(
            v.iter()
                .any(|m| m["type"] == "error" && m["message"].as_str().unwrap().contains("retired")),
            "{v:?}"
        );
    }
    assert_eq!(h.close_code(a), None, "agents do not use the secret");
    // Tokens signed by the new secret are accepted, the old ones refused.
    h.browser_as("tester", new_secret);
    let c = h.open(Endpoint::Browser, None);
    let t = h.token(Role::Admin, Duration::from_secs(60));
    h.send(c, &json!({"type": "auth", "token": t}));
    assert_eq!(h.close_code(c), Some(1008));
}

#[test]
fn turning_auth_on_closes_anonymous_browsers() {
    let mut h = Harness::new("server_id = \"local\"\n");
    let b = h.open(Endpoint::Browser, None);
    assert_eq!(h.types(b)[0], "connection_established");
    let secret = temp_file("secret", SECRET);
    h.reload(&config_text(Some(&secret), ""));
    assert_eq!(h.close_code(b), Some(1008));
}

#[test]
fn a_removed_or_changed_user_loses_their_sessions() {
    let secret = temp_file("secret", SECRET);
    let users = format!(
        "{}{}{}",
        user_entry("alice", "admin"),
        user_entry("bob", "admin"),
        user_entry("carol", "admin")
    );
    let mut h = Harness::new(&config_text(Some(&secret), &users));
    let alice = h.browser_as("alice", SECRET);
    let bob = h.browser_as("bob", SECRET);
    let carol = h.browser_as("carol", SECRET);
    // A token for a name that never was a user (`dockwire token`).
    let other = h.browser_as("ops-script", SECRET);
    h.reload(&config_text(
        Some(&secret),
        &format!(
            "{}{}",
            user_entry("bob", "admin"),
            user_entry("carol", "viewer")
        ),
    ));
    assert_eq!(h.close_code(alice), Some(1008), "removed");
    assert_eq!(h.close_code(carol), Some(1008), "role changed");
    assert_eq!(h.close_code(bob), None);
    assert_eq!(h.close_code(other), None);
}

#[test]
fn a_new_alert_rule_is_live_and_kept_rules_keep_their_state() {
    let mut h = Harness::new(
        "server_id = \"local\"\n[[alerts]]\nname = \"cpu\"\nrule = \"cpu_percent > 0 for 0s\"\n",
    );
    h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(sample(
        "a",
    ))));
    let firing = |h: &Harness| -> Vec<String> {
        let v: Value = serde_json::from_slice(&h.hub.state().alerts_json()).unwrap();
        v["firing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["rule"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(firing(&h), ["cpu"]);
    // A new rule before the old one: the old one's state moves with it.
    h.reload(
        "server_id = \"local\"\n[[alerts]]\nname = \"mem\"\nrule = \"memory_percent > 0 for 0s\"\n\
         [[alerts]]\nname = \"cpu\"\nrule = \"cpu_percent > 0 for 0s\"\n",
    );
    assert_eq!(firing(&h), ["cpu"]);
    h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(sample(
        "b",
    ))));
    let mut now = firing(&h);
    now.sort();
    assert_eq!(
        now,
        ["cpu", "mem"],
        "the new rule fired, the old one did not fire twice"
    );
    // A rule removed: its alert is gone.
    h.reload(
        "server_id = \"local\"\n[[alerts]]\nname = \"mem\"\nrule = \"memory_percent > 0 for 0s\"\n",
    );
    assert_eq!(firing(&h), ["mem"]);
}
