//! Attack guarded against: a hostile peer sending arbitrary bytes as an HTTP
//! request head (the first thing any socket on the port does). Parsing and
//! the upgrade/origin checks must never panic, and a head must parse the same
//! whether it is read whole or only up to any shorter prefix first (a partial
//! read yields `Partial` or the same verdict, never a different complete head).

#![no_main]

use dockwire::http::{Parse, check_upgrade, origin_allowed, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_head(data);
    if let Parse::Complete(head) = &whole {
        assert!(head.head_len <= data.len());
        let _ = check_upgrade(head);
        let _ = origin_allowed(head, &["https://dash.example.com".to_string()]);
        // The head alone parses to the same thing.
        assert_eq!(parse_head(&data[..head.head_len]), whole);
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse_head(&data[..cut]) {
            Parse::Complete(h) => assert!(matches!(&whole, Parse::Complete(w) if *w == h)),
            Parse::Partial | Parse::Invalid(_) => {}
        }
    }
});
