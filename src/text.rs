//! Numbers and addresses as text, for what runs on every request (a forwarded-for list, a
//! `Host` with its port, a log line): `fmt`'s machinery costs more than the digits do.

use std::net::IpAddr;

/// Appends an integer's decimal digits.
pub fn push_int(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends an address as `Display` writes it: IPv4 by hand, IPv6 (rarer, and longer to get
/// right) through `Display`.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_int(out, octet);
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write;
            let _ = write!(out, "{ip}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for a in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            let mut s = String::from("x ");
            push_ip(&mut s, ip);
            assert_eq!(s, format!("x {ip}"));
        }
    }

    #[test]
    fn integers() {
        let mut s = String::new();
        push_int(&mut s, 0u16);
        s.push(' ');
        push_int(&mut s, 65535u16);
        s.push(' ');
        push_int(&mut s, u64::MAX);
        assert_eq!(s, format!("0 65535 {}", u64::MAX));
    }
}
