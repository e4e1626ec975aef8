//! A gRPC call's deadline (`grpc-timeout`, gRPC over HTTP/2 §Requests): the gateway waits for
//! the upstream no longer than the client will, so an expired call ends as DEADLINE_EXCEEDED
//! (the 504 of an upstream timeout, which `respond::grpc` turns into grpc-status 4) instead of
//! holding a connection the client has given up on.

use http::HeaderMap;
use std::time::Duration;

/// `TimeoutValue TimeoutUnit`: at most 8 digits, then one of `H M S m u n`. Anything else is
/// no deadline (the route's timeout still applies).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?.trim();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", v.parse().unwrap());
        grpc_timeout(&h)
    }

    #[test]
    fn every_unit_and_nothing_else() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("1n"), Some(Duration::from_nanos(1)));
        for bad in ["", "m", "123456789m", "1.5S", "-1S", "10x", "10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
