//! The handshake's query string for `/socket.io/`: only Engine.IO v4 over
//! websocket is served, and every refusal says so, because the usual cause
//! is a client left on its default `transports: ['polling', 'websocket']`.

/// Checks the query of a `/socket.io/` request (the part after `?`; a
/// leading `?` is tolerated). Unknown parameters (`t`, a client's own
/// `query` option) are ignored.
///
/// # Errors
/// A message fit for a 400 body when `EIO` is missing or not `4`, when
/// `transport` is missing or not `websocket`, when either is given twice,
/// or when the client tries to resume or upgrade a session (`sid`).
pub fn check_query(query: &str) -> Result<(), &'static str> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut eio = None;
    let mut transport = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "EIO" => &mut eio,
            "transport" => &mut transport,
            "sid" => {
                return Err(
                    "Engine.IO sessions cannot be resumed or upgraded: open a new \
                            websocket connection with EIO=4&transport=websocket (Engine.IO v4)",
                );
            }
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(
                "duplicate EIO or transport query parameter: this endpoint serves \
                        Engine.IO v4 over websocket only (EIO=4&transport=websocket)",
            );
        }
    }
    match eio {
        None => {
            return Err(
                "missing EIO query parameter: this endpoint serves Engine.IO v4 over \
                        websocket only (EIO=4&transport=websocket)",
            );
        }
        Some("4") => {}
        Some(_) => {
            return Err(
                "unsupported Engine.IO protocol version: only Engine.IO v4 (EIO=4, \
                        socket.io-client 3.x/4.x) over websocket is served",
            );
        }
    }
    match transport {
        Some("websocket") => Ok(()),
        None => Err(
            "missing transport query parameter: only the websocket transport of \
                     Engine.IO v4 is served (transport=websocket)",
        ),
        Some("polling") => Err("only the websocket transport of Engine.IO v4 is served: \
                                set transports: ['websocket'] on the client"),
        Some(_) => Err(
            "unknown transport: only the websocket transport of Engine.IO v4 is \
                        served (transport=websocket)",
        ),
    }
}
