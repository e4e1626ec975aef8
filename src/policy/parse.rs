//! PPL text (YAML or JSON) → the compiled policy tree. Every error names its path inside the
//! config (`routes[4].policy[1].allow.and[2]: unknown criterion 'emial'`).

use super::matchers::{parse_list_matcher, parse_string_matcher, scalar};
use super::{CertMatcher, Criterion, DeviceMatcher, Expr, Policy, Rule};
use ipnet::IpNet;
use serde_yaml_ng::Value;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

/// Parsing context: where the policy sits in the config, for error paths.
pub struct Ctx;

impl Ctx {
    pub fn err(&self, path: &str, message: &str) -> ParseError {
        ParseError {
            path: path.to_string(),
            message: message.to_string(),
        }
    }
}

const CRITERIA: &[&str] = &[
    "accept",
    "reject",
    "authenticated_user",
    "email",
    "domain",
    "user",
    "claim/<name>",
    "groups",
    "http_method",
    "http_path",
    "source_ip",
    "cors_preflight",
    "date",
    "day_of_week",
    "time_of_day",
    "client_certificate",
    "invalid_client_certificate",
    "device",
    "mcp_tool",
    "mcp_tool_argument",
];

/// A policy: one rule object or a list of them; a string holding YAML/JSON is parsed first.
pub fn parse_policy(v: &Value, path: &str) -> Result<Policy, ParseError> {
    let cx = Ctx;
    if let Value::String(text) = v {
        let inner: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| cx.err(path, &format!("not valid YAML/JSON: {e}")))?;
        // One level only: a string that parses to a string is not a policy (and must not recurse).
        if matches!(inner, Value::String(_)) {
            return Err(cx.err(
                path,
                "expected a rule ({allow: …, deny: …}) or a list of rules",
            ));
        }
        return parse_policy(&inner, path);
    }
    let rules = match v {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, r)| parse_rule(r, &cx, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Value::Mapping(_) => vec![parse_rule(v, &cx, path)?],
        _ => {
            return Err(cx.err(
                path,
                "expected a rule ({allow: …, deny: …}) or a list of rules",
            ))
        }
    };
    Ok(Policy { rules })
}

fn parse_rule(v: &Value, cx: &Ctx, path: &str) -> Result<Rule, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, "expected a rule with `allow` and/or `deny`"));
    };
    let mut rule = Rule {
        allow: None,
        deny: None,
    };
    for (k, val) in m {
        let key = scalar(k).unwrap_or_default();
        let p = format!("{path}.{key}");
        match key.as_str() {
            "allow" => rule.allow = Some(parse_action(val, cx, &p)?),
            "deny" => rule.deny = Some(parse_action(val, cx, &p)?),
            other => return Err(cx.err(&p, &format!("unknown action '{other}' (allow, deny)"))),
        }
    }
    if rule.allow.is_none() && rule.deny.is_none() {
        return Err(cx.err(path, "a rule needs `allow` or `deny`"));
    }
    Ok(rule)
}

/// An action's operators; several in one action are OR-ed (Pomerium's semantics).
fn parse_action(v: &Value, cx: &Ctx, path: &str) -> Result<Expr, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, "expected operators: and, or, not, nor"));
    };
    let mut ops = Vec::new();
    for (k, val) in m {
        let key = scalar(k).unwrap_or_default();
        ops.push(parse_operator(&key, val, cx, &format!("{path}.{key}"))?);
    }
    match ops.len() {
        0 => Err(cx.err(path, "no operator (and, or, not, nor)")),
        1 => Ok(ops.remove(0)),
        _ => Ok(Expr::Or(ops)),
    }
}

fn parse_operator(op: &str, v: &Value, cx: &Ctx, path: &str) -> Result<Expr, ParseError> {
    let Value::Sequence(items) = v else {
        return Err(cx.err(path, "expected a list of criteria"));
    };
    let children = items
        .iter()
        .enumerate()
        .map(|(i, it)| parse_item(it, cx, &format!("{path}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match op {
        "and" => Expr::And(children),
        "or" => Expr::Or(children),
        "not" => Expr::Not(children),
        "nor" => Expr::Nor(children),
        other => {
            return Err(cx.err(
                path,
                &format!("unknown operator '{other}' (and, or, not, nor)"),
            ))
        }
    })
}

/// A list item: a single-key map, either a nested operator (a Vallum extension) or a criterion.
fn parse_item(v: &Value, cx: &Ctx, path: &str) -> Result<Expr, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, "expected a criterion such as `email: {is: …}`"));
    };
    if m.len() != 1 {
        return Err(cx.err(path, "a criterion is a map with exactly one key"));
    }
    let Some((k, val)) = m.iter().next() else {
        return Err(cx.err(path, "empty criterion"));
    };
    let key = scalar(k).unwrap_or_default();
    if matches!(key.as_str(), "and" | "or" | "not" | "nor") {
        return parse_operator(&key, val, cx, &format!("{path}.{key}"));
    }
    parse_criterion(&key, val, cx, path).map(Expr::Criterion)
}

fn truthy(v: &Value, cx: &Ctx, path: &str) -> Result<bool, ParseError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(true),
        _ => Err(cx.err(path, "expected true")),
    }
}

fn parse_criterion(key: &str, v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let p = format!("{path}.{key}");
    let flag = |c: Criterion| -> Result<Criterion, ParseError> {
        if truthy(v, cx, &p)? {
            Ok(c)
        } else {
            Ok(Criterion::Not(Box::new(c)))
        }
    };
    if let Some(name) = key.strip_prefix("claim/") {
        if name.is_empty() {
            return Err(cx.err(&p, "claim/ needs a claim name, e.g. claim/groups"));
        }
        return Ok(Criterion::Claim {
            name: name.to_string(),
            matcher: parse_list_matcher(v, cx, &p)?,
        });
    }
    Ok(match key {
        "accept" => flag(Criterion::Accept)?,
        "reject" => flag(Criterion::Reject)?,
        "authenticated_user" => flag(Criterion::AuthenticatedUser)?,
        "cors_preflight" => flag(Criterion::CorsPreflight)?,
        "email" => Criterion::Email(parse_string_matcher(v, cx, &p)?.lowercase()),
        "domain" => Criterion::Domain(parse_string_matcher(v, cx, &p)?.lowercase()),
        "user" => Criterion::User(parse_string_matcher(v, cx, &p)?),
        "groups" => Criterion::Groups(parse_list_matcher(v, cx, &p)?),
        "http_method" => Criterion::HttpMethod(parse_string_matcher(v, cx, &p)?),
        "http_path" => Criterion::HttpPath(parse_string_matcher(v, cx, &p)?),
        "source_ip" => Criterion::SourceIp(parse_ips(v, cx, &p)?),
        "date" => parse_date(v, cx, &p)?,
        "day_of_week" => parse_day_of_week(v, cx, &p)?,
        "time_of_day" => parse_time_of_day(v, cx, &p)?,
        "invalid_client_certificate" => flag(Criterion::InvalidClientCertificate)?,
        "client_certificate" => parse_client_certificate(v, cx, &p)?,
        "device" => parse_device(v, cx, &p)?,
        "mcp_tool" => Criterion::McpTool(parse_string_matcher(v, cx, &p)?),
        "mcp_tool_argument" => parse_mcp_argument(v, cx, &p)?,
        other => {
            let hint = suggest(other)
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            return Err(cx.err(
                path,
                &format!(
                    "unknown criterion '{other}'{hint} (known: {})",
                    CRITERIA.join(", ")
                ),
            ));
        }
    })
}

/// `mcp_tool_argument: {name: path, starts_with: /srv/public/}`: the argument's name and a
/// string matcher for its value.
fn parse_mcp_argument(v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, "expected {name: <argument>, <matcher>: …}, e.g. {name: path, starts_with: /srv/public/}"));
    };
    let mut rest = serde_yaml_ng::Mapping::new();
    let mut name = None;
    for (k, val) in m {
        match scalar(k).as_deref() {
            Some("name") => name = scalar(val),
            _ => {
                rest.insert(k.clone(), val.clone());
            }
        }
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(cx.err(path, "needs name: the argument to match"));
    };
    if rest.is_empty() {
        return Err(cx.err(
            path,
            "needs a matcher for the value (is, starts_with, in, …)",
        ));
    }
    Ok(Criterion::McpToolArgument {
        name,
        matcher: parse_string_matcher(&Value::Mapping(rest), cx, path)?,
    })
}

fn suggest(key: &str) -> Option<&'static str> {
    CRITERIA
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn parse_ips(v: &Value, cx: &Ctx, path: &str) -> Result<Vec<IpNet>, ParseError> {
    let items: Vec<String> = match v {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    };
    if items.is_empty() {
        return Err(cx.err(path, "expected an IP address, a CIDR, or a list of them"));
    }
    items
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| cx.err(path, &format!("'{s}' is not an IP address or CIDR")))
        })
        .collect()
}

fn parse_date(v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, "expected {after: …, before: …} with RFC 3339 times"));
    };
    let (mut after, mut before) = (None, None);
    for (k, val) in m {
        let key = scalar(k).unwrap_or_default();
        let text = scalar(val).unwrap_or_default();
        // RFC 3339, or (as Pomerium's PPL reference writes them) a date-time without a zone,
        // read as UTC, or a bare date.
        let t = chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S")
                    .or_else(|_| chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M"))
                    .map(|t| t.and_utc())
            })
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                    .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
            })
            .map_err(|_| {
                cx.err(
                    &format!("{path}.{key}"),
                    &format!("'{text}' is not an RFC 3339 time or a date"),
                )
            })?;
        match key.as_str() {
            "after" => after = Some(t),
            "before" => before = Some(t),
            other => return Err(cx.err(&format!("{path}.{other}"), "expected after or before")),
        }
    }
    if after.is_none() && before.is_none() {
        return Err(cx.err(path, "needs after and/or before"));
    }
    Ok(Criterion::Date { after, before })
}

fn timezone(v: Option<&Value>, cx: &Ctx, path: &str) -> Result<chrono_tz::Tz, ParseError> {
    let name = v.and_then(scalar).unwrap_or_else(|| "UTC".into());
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        cx.err(
            &format!("{path}.timezone"),
            &format!("unknown time zone '{name}' (an IANA name such as Europe/Paris)"),
        )
    })
}

/// `mon-fri`, `mon,wed,fri`, `*`, or a list; optionally `{is: …, timezone: …}`.
fn parse_day_of_week(v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let (spec, tz) = match v {
        Value::Mapping(m) => (
            m.get("is").cloned().unwrap_or(Value::Null),
            timezone(m.get("timezone"), cx, path)?,
        ),
        other => (other.clone(), chrono_tz::Tz::UTC),
    };
    let parts: Vec<String> = match &spec {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        other => scalar(other)
            .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default(),
    };
    let day = |s: &str| -> Result<u8, ParseError> {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .position(|d| s.eq_ignore_ascii_case(d) || s.to_ascii_lowercase().starts_with(d))
            .map(|i| i as u8)
            .ok_or_else(|| cx.err(path, &format!("'{s}' is not a day (mon … sun)")))
    };
    let mut mask = 0u8;
    for p in &parts {
        if p == "*" {
            mask = 0x7f;
        } else if let Some((a, b)) = p.split_once('-') {
            let (a, b) = (day(a.trim())?, day(b.trim())?);
            let mut d = a;
            loop {
                mask |= 1 << d;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        } else {
            mask |= 1 << day(p)?;
        }
    }
    if mask == 0 {
        return Err(cx.err(path, "expected days such as mon-fri"));
    }
    Ok(Criterion::DayOfWeek { mask, tz })
}

/// `{timezone: Europe/Paris, after: "08:00", before: "18:00"}`; `timezone` is required.
fn parse_time_of_day(v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(path, "expected {timezone: …, after: HH:MM, before: HH:MM}"));
    };
    if m.get("timezone").is_none() {
        return Err(cx.err(
            path,
            "timezone is required (an IANA name such as America/New_York)",
        ));
    }
    let tz = timezone(m.get("timezone"), cx, path)?;
    let minutes = |k: &str| -> Result<Option<u32>, ParseError> {
        let Some(t) = m.get(k).and_then(scalar) else {
            return Ok(None);
        };
        // 24-hour `HH:MM[:SS]`, or the 12-hour `4:30PM` / `4:30 pm` Pomerium's reference uses.
        let upper = t.trim().to_ascii_uppercase();
        [
            "%H:%M",
            "%H:%M:%S",
            "%I:%M%p",
            "%I:%M %p",
            "%I:%M:%S%p",
            "%I:%M:%S %p",
        ]
        .iter()
        .find_map(|f| chrono::NaiveTime::parse_from_str(&upper, f).ok())
        .ok_or(())
        .map(|t| Some(chrono::Timelike::hour(&t) * 60 + chrono::Timelike::minute(&t)))
        .map_err(|_| {
            cx.err(
                &format!("{path}.{k}"),
                &format!("'{t}' is not a time (HH:MM, or 4:30PM)"),
            )
        })
    };
    let (after, before) = (minutes("after")?, minutes("before")?);
    if after.is_none() && before.is_none() {
        return Err(cx.err(path, "needs after and/or before"));
    }
    Ok(Criterion::TimeOfDay { after, before, tz })
}

/// One value or a list of them, as strings.
fn one_or_many(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// `{fingerprint: …, spki_hash: …, san_dns: {…}, san_email: {…}, san_uri: {…}}`.
fn parse_client_certificate(v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let Value::Mapping(m) = v else {
        return Err(cx.err(
            path,
            "expected {fingerprint, spki_hash, san_dns, san_email, san_uri}",
        ));
    };
    let mut cm = CertMatcher::default();
    for (k, val) in m {
        let key = scalar(k).unwrap_or_default();
        let p = format!("{path}.{key}");
        match key.as_str() {
            "fingerprint" => {
                for f in one_or_many(val) {
                    let parsed = crate::tls::peer::parse_fingerprint(&f).ok_or_else(|| {
                        cx.err(&p, &format!("'{f}' is not a SHA-256 fingerprint (64 hex digits, optionally colon-separated)"))
                    })?;
                    cm.fingerprints.push(parsed);
                }
            }
            "spki_hash" => {
                for h in one_or_many(val) {
                    let parsed = crate::tls::peer::parse_spki_hash(&h).ok_or_else(|| {
                        cx.err(&p, &format!("'{h}' is not a base64 SHA-256 hash"))
                    })?;
                    cm.spki_hashes.push(parsed);
                }
            }
            "san_dns" => cm.san_dns = Some(parse_string_matcher(val, cx, &p)?),
            "san_email" => cm.san_email = Some(parse_string_matcher(val, cx, &p)?),
            "san_uri" => cm.san_uri = Some(parse_string_matcher(val, cx, &p)?),
            other => {
                return Err(cx.err(
                    &p,
                    &format!(
                    "unknown field '{other}' (fingerprint, spki_hash, san_dns, san_email, san_uri)"
                ),
                ))
            }
        }
    }
    if cm == CertMatcher::default() {
        return Err(cx.err(
            path,
            "needs at least one of fingerprint, spki_hash, san_dns, san_email, san_uri",
        ));
    }
    Ok(Criterion::ClientCertificate(Box::new(cm)))
}

/// `{is: <credential id>, approved: true, type: any|enclave_only|…}`; `{}` = any proven device.
fn parse_device(v: &Value, cx: &Ctx, path: &str) -> Result<Criterion, ParseError> {
    let mut dm = DeviceMatcher::default();
    match v {
        Value::Null | Value::Bool(true) => {}
        Value::Mapping(m) => {
            for (k, val) in m {
                let key = scalar(k).unwrap_or_default();
                let p = format!("{path}.{key}");
                match key.as_str() {
                    "is" => dm.is = Some(parse_string_matcher(val, cx, &p)?),
                    "approved" => match val {
                        Value::Bool(b) => dm.approved = Some(*b),
                        _ => return Err(cx.err(&p, "expected true or false")),
                    },
                    "type" => {
                        dm.type_id = Some(scalar(val).ok_or_else(|| {
                            cx.err(&p, "expected a device type id such as any or enclave_only")
                        })?)
                    }
                    other => {
                        return Err(
                            cx.err(&p, &format!("unknown field '{other}' (is, approved, type)"))
                        )
                    }
                }
            }
        }
        _ => return Err(cx.err(path, "expected {is, approved, type}")),
    }
    Ok(Criterion::Device(Box::new(dm)))
}
