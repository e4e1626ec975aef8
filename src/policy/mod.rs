//! PPL — Pomerium Policy Language — compiled and evaluated. Pure: no I/O, time is an input.
//!
//! A policy is a list of rules; a rule has `allow` and/or `deny`, each an operator tree (`and`,
//! `or`, `not` = none match, `nor` = not all match) over criteria. Access iff some allow matches
//! and no deny matches. For an anonymous request, identity criteria are *unknown* (three-valued
//! logic): when the outcome hinges on them the answer is `NeedLogin`, so an anonymous user is sent
//! to sign in only when signing in could change the decision.

mod claims;
mod device_cert;
pub mod matchers;
pub mod mcp;
mod names;
pub mod parse;
pub mod reason;

use crate::tls::peer::PeerCert;
use chrono::{DateTime, Datelike, Timelike, Utc};
pub use claims::Claims;
use ipnet::IpNet;
use matchers::{ListMatcher, StringMatcher};
use serde_json::Value;
use std::net::IpAddr;

pub use device_cert::{CertMatcher, DeviceMatcher, ProvenDevice};
pub use parse::{parse_policy, ParseError};
pub use reason::Reason;

#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    Accept,
    Reject,
    AuthenticatedUser,
    Email(StringMatcher),
    Domain(StringMatcher),
    User(StringMatcher),
    Claim {
        name: String,
        matcher: ListMatcher,
    },
    Groups(ListMatcher),
    HttpMethod(StringMatcher),
    HttpPath(StringMatcher),
    SourceIp(Vec<IpNet>),
    CorsPreflight,
    Date {
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    },
    /// Bit `d` set for weekday `d` (Monday = 0).
    DayOfWeek {
        mask: u8,
        tz: chrono_tz::Tz,
    },
    /// Minutes after midnight; `after` inclusive, `before` exclusive.
    TimeOfDay {
        after: Option<u32>,
        before: Option<u32>,
        tz: chrono_tz::Tz,
    },
    /// No trusted client certificate on the connection.
    InvalidClientCertificate,
    /// A trusted client certificate matching every given field.
    ClientCertificate(Box<CertMatcher>),
    /// A WebAuthn device the user proved in this session, matching every given field.
    Device(Box<DeviceMatcher>),
    /// `mcp_tool`: a `tools/call` whose tool name matches.
    McpTool(StringMatcher),
    /// `mcp_tool_argument` (Vallum): a `tools/call` with this argument, its value matching.
    McpToolArgument {
        name: String,
        matcher: StringMatcher,
    },
    /// `criterion: false`.
    Not(Box<Criterion>),
}

/// The connection's client certificate as the policy sees it.
#[derive(Debug, Clone, Copy, Default)]
pub enum CertInput<'a> {
    #[default]
    Absent,
    Untrusted,
    Trusted(&'a PeerCert),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// None of the children match.
    Not(Vec<Expr>),
    /// Not all of the children match.
    Nor(Vec<Expr>),
    Criterion(Criterion),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub allow: Option<Expr>,
    pub deny: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// Who is asking (absent for anonymous requests).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub user_id: &'a str,
    /// Lower-case.
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    /// The `name` claim a session keeps as a field (its claims map drops the duplicate).
    pub name: Option<&'a str>,
    pub claims: &'a Claims,
}

#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub subject: Option<Subject<'a>>,
    pub method: &'a str,
    /// The normalised path, never the query.
    pub path: &'a str,
    pub client_ip: Option<IpAddr>,
    pub now: DateTime<Utc>,
    /// OPTIONS with `Origin` and `Access-Control-Request-Method`.
    pub cors_preflight: bool,
    pub client_cert: CertInput<'a>,
    /// Devices proven in this session (empty for anonymous requests).
    pub devices: &'a [ProvenDevice<'a>],
    /// The JSON-RPC message of a request to an MCP route (`mcp_tool`, `mcp_tool_argument`).
    pub mcp: Option<mcp::McpInput<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reasons: Vec<Reason> },
    NeedLogin,
}

/// Three-valued truth: `Unknown` for identity criteria of an anonymous request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn from(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

fn all(items: impl Iterator<Item = Tri>) -> Tri {
    let mut r = Tri::True;
    for t in items {
        match t {
            Tri::False => return Tri::False,
            Tri::Unknown => r = Tri::Unknown,
            Tri::True => {}
        }
    }
    r
}

fn any(items: impl Iterator<Item = Tri>) -> Tri {
    let mut r = Tri::False;
    for t in items {
        match t {
            Tri::True => return Tri::True,
            Tri::Unknown => r = Tri::Unknown,
            Tri::False => {}
        }
    }
    r
}

impl Criterion {
    /// Pomerium's reason when this criterion is why access was refused.
    pub fn reason(&self) -> Reason {
        match self {
            Criterion::Accept => Reason::Accept,
            Criterion::Reject => Reason::Reject,
            Criterion::AuthenticatedUser => Reason::UserUnauthenticated,
            Criterion::Email(_) => Reason::EmailUnauthorized,
            Criterion::Domain(_) => Reason::DomainUnauthorized,
            Criterion::User(_) => Reason::UserUnauthorized,
            Criterion::Claim { .. } => Reason::ClaimUnauthorized,
            Criterion::Groups(_) => Reason::GroupsUnauthorized,
            Criterion::HttpMethod(_) => Reason::HttpMethodUnauthorized,
            Criterion::HttpPath(_) => Reason::HttpPathUnauthorized,
            Criterion::SourceIp(_) => Reason::SourceIpUnauthorized,
            Criterion::CorsPreflight => Reason::NonCorsRequest,
            Criterion::Date { .. } => Reason::DateUnauthorized,
            Criterion::DayOfWeek { .. } => Reason::DayOfWeekUnauthorized,
            Criterion::TimeOfDay { .. } => Reason::TimeOfDayUnauthorized,
            Criterion::InvalidClientCertificate => Reason::InvalidClientCertificate,
            Criterion::ClientCertificate(_) => Reason::ClientCertificateRequired,
            Criterion::Device(_) => Reason::DeviceUnauthorized,
            Criterion::McpTool(_) => Reason::McpToolUnauthorized,
            Criterion::McpToolArgument { .. } => Reason::McpArgumentUnauthorized,
            Criterion::Not(c) => c.reason(),
        }
    }

    /// The reason for this request: certificate and device reasons say whether anything was
    /// presented at all (Pomerium's distinction, which decides between 495/450 and 403).
    pub fn reason_for(&self, input: &Input<'_>) -> Reason {
        match self {
            Criterion::InvalidClientCertificate | Criterion::ClientCertificate(_) => {
                match input.client_cert {
                    CertInput::Absent => Reason::ClientCertificateRequired,
                    CertInput::Untrusted => Reason::InvalidClientCertificate,
                    CertInput::Trusted(_) => Reason::ClientCertificateUnauthorized,
                }
            }
            Criterion::Device(_) if input.devices.is_empty() => Reason::DeviceUnauthenticated,
            other => other.reason(),
        }
    }

    fn needs_identity(&self) -> bool {
        match self {
            Criterion::AuthenticatedUser
            | Criterion::Email(_)
            | Criterion::Domain(_)
            | Criterion::User(_)
            | Criterion::Claim { .. }
            | Criterion::Groups(_)
            | Criterion::Device(_) => true,
            Criterion::Not(c) => c.needs_identity(),
            _ => false,
        }
    }

    pub fn eval(&self, input: &Input<'_>) -> Tri {
        let who = input.subject;
        let with_subject = |f: &dyn Fn(&Subject<'_>) -> bool| match &who {
            Some(s) => Tri::from(f(s)),
            None => Tri::Unknown,
        };
        match self {
            Criterion::Accept => Tri::True,
            Criterion::Reject => Tri::False,
            Criterion::AuthenticatedUser => with_subject(&|_| true),
            Criterion::Email(m) => with_subject(&|s| s.email.is_some_and(|e| m.matches(e))),
            // An address with more than one `@` has no single domain: it never matches.
            Criterion::Domain(m) => with_subject(&|s| {
                s.email
                    .filter(|e| e.matches('@').count() == 1)
                    .and_then(|e| e.rsplit_once('@'))
                    .is_some_and(|(_, d)| m.matches(d))
            }),
            Criterion::User(m) => with_subject(&|s| m.matches(s.user_id)),
            Criterion::Groups(m) => with_subject(&|s| m.matches(s.groups)),
            Criterion::Claim { name, matcher } => {
                with_subject(&|s| matcher.matches(&claim_values(s, name)))
            }

            Criterion::HttpMethod(m) => Tri::from(m.matches(input.method)),
            Criterion::HttpPath(m) => Tri::from(m.matches(input.path)),
            Criterion::SourceIp(nets) => Tri::from(input.client_ip.is_some_and(|ip| {
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                    v4 => v4,
                };
                nets.iter().any(|n| n.contains(&ip))
            })),
            Criterion::CorsPreflight => Tri::from(input.cors_preflight),
            Criterion::Date { after, before } => Tri::from(
                after.is_none_or(|a| input.now >= a) && before.is_none_or(|b| input.now < b),
            ),
            Criterion::DayOfWeek { mask, tz } => {
                let d = input.now.with_timezone(tz).weekday().num_days_from_monday();
                Tri::from(mask & (1 << d) != 0)
            }
            Criterion::TimeOfDay { after, before, tz } => {
                let local = input.now.with_timezone(tz);
                let m = local.hour() * 60 + local.minute();
                let ok = match (after, before) {
                    // A window across midnight (22:00–06:00).
                    (Some(a), Some(b)) if a > b => m >= *a || m < *b,
                    _ => after.is_none_or(|a| m >= a) && before.is_none_or(|b| m < b),
                };
                Tri::from(ok)
            }
            Criterion::InvalidClientCertificate => {
                Tri::from(!matches!(input.client_cert, CertInput::Trusted(_)))
            }
            Criterion::ClientCertificate(m) => Tri::from(match input.client_cert {
                CertInput::Trusted(c) => m.matches(c),
                _ => false,
            }),
            Criterion::Device(m) => with_subject(&|_| input.devices.iter().any(|d| m.matches(d))),
            Criterion::McpTool(m) => mcp::tool(input.mcp.as_ref(), m),
            Criterion::McpToolArgument { name, matcher } => {
                mcp::argument(input.mcp.as_ref(), name, matcher)
            }
            Criterion::Not(c) => c.eval(input).not(),
        }
    }
}

/// A claim's values as strings (a list claim, or one scalar); `groups` falls back to the session's groups.
/// `claim_values`, for the session's tests (a claim read back after `compact_claims`).
#[cfg(test)]
pub fn claim_values_for_test(s: &Subject<'_>, name: &str) -> Vec<String> {
    claim_values(s, name)
}

fn claim_values(s: &Subject<'_>, name: &str) -> Vec<String> {
    match s.claims.get(name) {
        Some(Value::Array(a)) => a.iter().map(json_text).collect(),
        Some(v) => vec![json_text(v)],
        None if name == "groups" => s.groups.to_vec(),
        None if name == "email" => s.email.map(str::to_string).into_iter().collect(),
        None if name == "sub" || name == "user" => vec![s.user_id.to_string()],
        None if name == "name" => s.name.map(str::to_string).into_iter().collect(),
        None => Vec::new(),
    }
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Expr {
    pub fn eval(&self, input: &Input<'_>) -> Tri {
        match self {
            Expr::And(c) => all(c.iter().map(|e| e.eval(input))),
            Expr::Or(c) => any(c.iter().map(|e| e.eval(input))),
            Expr::Not(c) => any(c.iter().map(|e| e.eval(input))).not(),
            Expr::Nor(c) => all(c.iter().map(|e| e.eval(input))).not(),
            Expr::Criterion(c) => c.eval(input),
        }
    }

    fn needs_identity(&self) -> bool {
        match self {
            Expr::And(c) | Expr::Or(c) | Expr::Not(c) | Expr::Nor(c) => {
                c.iter().any(Expr::needs_identity)
            }
            Expr::Criterion(c) => c.needs_identity(),
        }
    }

    /// Reasons: the criteria whose value was `want` (false ones for a failed allow, true ones
    /// for a matched deny).
    fn reasons(&self, input: &Input<'_>, want: Tri, out: &mut Vec<Reason>) {
        match self {
            Expr::Criterion(c) => {
                let reason = c.reason_for(input);
                if c.eval(input) == want && !out.contains(&reason) {
                    out.push(reason);
                }
            }
            Expr::And(c) | Expr::Or(c) => c.iter().for_each(|e| e.reasons(input, want, out)),
            Expr::Not(c) | Expr::Nor(c) => c.iter().for_each(|e| e.reasons(input, want.not(), out)),
        }
    }
}

impl Expr {
    fn any_criterion(&self, f: &dyn Fn(&Criterion) -> bool) -> bool {
        match self {
            Expr::And(c) | Expr::Or(c) | Expr::Not(c) | Expr::Nor(c) => {
                c.iter().any(|e| e.any_criterion(f))
            }
            Expr::Criterion(Criterion::Not(c)) => f(c),
            Expr::Criterion(c) => f(c),
        }
    }
}

impl Policy {
    fn any_criterion(&self, f: &dyn Fn(&Criterion) -> bool) -> bool {
        self.rules.iter().any(|r| {
            r.allow
                .iter()
                .chain(r.deny.iter())
                .any(|e| e.any_criterion(f))
        })
    }

    /// Whether this policy looks at the client certificate (a client-certificate boundary for
    /// the domain-fronting check).
    pub fn mentions_client_certificate(&self) -> bool {
        self.any_criterion(&|c| {
            matches!(
                c,
                Criterion::InvalidClientCertificate | Criterion::ClientCertificate(_)
            )
        })
    }

    /// Whether this policy reads the request method (then a method-override header must not
    /// reach the upstream, which might honour it).
    pub fn mentions_method(&self) -> bool {
        self.any_criterion(&|c| matches!(c, Criterion::HttpMethod(_)))
    }

    /// Whether this policy decides on MCP tool calls (`mcp_tool`, `mcp_tool_argument`).
    pub fn mentions_mcp(&self) -> bool {
        self.any_criterion(&|c| {
            matches!(c, Criterion::McpTool(_) | Criterion::McpToolArgument { .. })
        })
    }

    /// Whether this policy asks for a WebAuthn device.
    pub fn mentions_device(&self) -> bool {
        self.any_criterion(&|c| matches!(c, Criterion::Device(_)))
    }

    /// The first device type a `device` criterion names (the device page preselects it).
    pub fn device_type_wanted(&self) -> Option<String> {
        let found = std::cell::RefCell::new(None);
        self.any_criterion(&|c| match c {
            Criterion::Device(m) => {
                if let Some(t) = &m.type_id {
                    *found.borrow_mut() = Some(t.clone());
                    return true;
                }
                false
            }
            _ => false,
        });
        found.into_inner()
    }

    /// Every device type id a `device` criterion names (checked against `device_types`).
    pub fn device_types_named(&self) -> Vec<String> {
        let found = std::cell::RefCell::new(Vec::new());
        self.any_criterion(&|c| {
            if let Criterion::Device(m) = c {
                if let Some(t) = &m.type_id {
                    found.borrow_mut().push(t.clone());
                }
            }
            false
        });
        found.into_inner()
    }

    /// Whether evaluating this policy can depend on who the user is (else the session lookup
    /// can be skipped).
    pub fn needs_identity(&self) -> bool {
        self.rules.iter().any(|r| {
            r.allow
                .iter()
                .chain(r.deny.iter())
                .any(Expr::needs_identity)
        })
    }

    pub fn evaluate(&self, input: &Input<'_>) -> Decision {
        let allow = any(self
            .rules
            .iter()
            .filter_map(|r| r.allow.as_ref())
            .map(|e| e.eval(input)));
        let deny = any(self
            .rules
            .iter()
            .filter_map(|r| r.deny.as_ref())
            .map(|e| e.eval(input)));
        match (allow, deny) {
            (_, Tri::True) => {
                let mut reasons = Vec::new();
                for d in self.rules.iter().filter_map(|r| r.deny.as_ref()) {
                    if d.eval(input) == Tri::True {
                        d.reasons(input, Tri::True, &mut reasons);
                    }
                }
                Decision::Deny { reasons }
            }
            (Tri::True, Tri::False) => Decision::Allow,
            (Tri::False, Tri::False) => {
                let mut reasons = Vec::new();
                for a in self.rules.iter().filter_map(|r| r.allow.as_ref()) {
                    a.reasons(input, Tri::False, &mut reasons);
                }
                if reasons.is_empty() {
                    reasons.push(Reason::Reject);
                }
                Decision::Deny { reasons }
            }
            // The outcome hinges on identity criteria: a signed-in user might get in.
            _ => Decision::NeedLogin,
        }
    }
}

/// Pomerium's legacy route keys, OR-ed into one allow rule placed before the PPL rules.
pub struct Legacy<'a> {
    pub allowed_users: &'a [String],
    pub allowed_domains: &'a [String],
    /// claim name → accepted values
    pub allowed_idp_claims: &'a [(String, Vec<String>)],
    pub allow_public: bool,
    pub allow_any_authenticated_user: bool,
    pub cors_allow_preflight: bool,
}

impl Legacy<'_> {
    pub fn rule(&self) -> Option<Rule> {
        let mut or = Vec::new();
        let crit = |c| Expr::Criterion(c);
        if self.allow_public {
            or.push(crit(Criterion::Accept));
        }
        if self.cors_allow_preflight {
            or.push(crit(Criterion::CorsPreflight));
        }
        if self.allow_any_authenticated_user {
            or.push(crit(Criterion::AuthenticatedUser));
        }
        for u in self.allowed_users {
            // A user id or an email, as in Pomerium.
            or.push(crit(Criterion::User(StringMatcher::Is(u.clone()))));
            or.push(crit(Criterion::Email(StringMatcher::Is(
                u.to_ascii_lowercase(),
            ))));
        }
        for d in self.allowed_domains {
            or.push(crit(Criterion::Domain(StringMatcher::Is(
                d.to_ascii_lowercase(),
            ))));
        }
        for (name, values) in self.allowed_idp_claims {
            for v in values {
                or.push(crit(Criterion::Claim {
                    name: name.clone(),
                    matcher: ListMatcher::Has(v.clone()),
                }));
            }
        }
        if or.is_empty() {
            return None;
        }
        Some(Rule {
            allow: Some(Expr::Or(or)),
            deny: None,
        })
    }
}

#[cfg(test)]
mod tests;
