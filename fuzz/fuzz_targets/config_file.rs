//! Attack guarded against: a config file with anything in it (a typo, a
//! hostile or truncated file). Loading must never panic: it is either a
//! valid `Config` or a `ConfigError` whose message names what is wrong, and
//! a valid one never serves anonymous admins beyond loopback by accident.

#![no_main]

use dockwire::config::{Config, FileConfig, Overrides};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    match Config::from_file(file, &Overrides::default()) {
        Ok(c) => assert!(
            c.auth_enabled() || c.listen.ip().is_loopback() || c.allow_anonymous_admin,
            "auth off on a non-loopback address without the opt-in"
        ),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
