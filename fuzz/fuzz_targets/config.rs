//! Any text as a config file: it loads, or it is rejected with an error that names the
//! file and a line inside it; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privatelink_dns::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, "fuzz.toml") {
        Ok(_) => {}
        Err(ConfigError::Invalid { path, line, .. }) => {
            assert_eq!(path, "fuzz.toml");
            assert!(line >= 1 && line <= text.lines().count() + 1, "line {line}");
        }
        Err(error) => panic!("unexpected error kind: {error}"),
    }
});
