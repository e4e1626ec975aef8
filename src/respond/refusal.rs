//! Every way Vallum says no, as one type, and the one place that turns it into a response.
//!
//! Proxy steps, the sign-in endpoints, WebAuthn, upstream failures and store outages all return a
//! `Refusal`; `Answer::refuse` picks the status, renders HTML or JSON (chosen once per request
//! from `Accept`), and puts the request id in the body. Nothing else builds an error response, so
//! an API client never gets an HTML error page and every error carries its id.

use super::pages::{escape, page};
use super::reply::Reply;
use crate::config::settings::Branding;
use crate::policy::Reason;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::borrow::Cow;

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ambiguous framing or a malformed request line: the connection is closed after the reply,
    /// since whatever follows on it could be a smuggled request.
    Malformed(&'static str),
    TooManyHeaders,
    HeadersTooLarge,
    UnderscoreHeader,
    /// The request target cannot be normalised (the normaliser says why).
    BadPath(String),
    BadHost,
    HostMismatch,
    SignInRateLimited,
    AuthenticateOnly,
    /// A `/.pomerium/` or authenticate-host path that does not exist.
    NotFound,
    NoRoute,
    /// A plain request to a TCP tunnel route (closes the connection).
    TunnelOnly,
    /// An upgrade the route does not allow (closes the connection).
    UpgradeNotAllowed,
    WebsocketOrigin,
    BodyTooLarge,
    /// SNI and `Host` differ across a client-certificate boundary.
    Misdirected,
    /// The route needs a trusted client certificate (495): signing in cannot fix this.
    ClientCertificate(Reason),
    /// The policy said no.
    Forbidden(Vec<Reason>),
    /// Anonymous on a route that needs a user: browsers go to `location` (the signed sign-in
    /// URL), API clients get 401.
    SignInRequired {
        location: Option<String>,
    },
    /// Signed in, but longer ago at the IdP than the route's `max_auth_age`: browsers go to
    /// `location` (a sign-in that asks the IdP to authenticate again), API clients get 401.
    ReauthenticationRequired {
        location: Option<String>,
    },
    /// Signed in without a device the route needs: browsers go to `location` (the device page),
    /// API clients get Pomerium's 450.
    DeviceRequired {
        location: Option<String>,
    },
    SignInNotConfigured,
    /// A forward-auth sub-request from a peer not in `forward_auth_ingresses`.
    NotAnIngress,
    /// A forward-auth sub-request that does not say which request it is about.
    VerifyRequest(&'static str),
    /// A forward-auth sub-request about a URL no route covers: denied, as everything is by
    /// default.
    VerifyNoRoute,
    UrlTooLong,
    NoHealthyUpstream,
    /// The route's `circuit_breaker_thresholds` are reached: turned away at once.
    UpstreamOverloaded,
    /// None of the route's upstream host names resolves (the reason goes to the log).
    UpstreamUnresolved,
    /// The upstream needs an identity token Vallum could not get (the reason goes to the log).
    UpstreamCredentials,
    BadRedirect,
    StoreUnavailable,
    /// Two different live sessions for one host (a cookie planted from a sibling domain).
    AmbiguousSession,
    /// A workload bearer token and a session cookie on one request: which one speaks is not
    /// guessed.
    AmbiguousCredentials,
    /// A bearer token the route's `bearer_token_format: jwt` could not verify (the reason goes
    /// to the log; the client learns only that it was refused).
    BearerRejected,
    /// No credential on a route that takes workload bearer tokens, from a client that cannot
    /// sign in (an API client, or a gateway without sign-in).
    BearerRequired,
    /// An MCP request without a usable access token: `401` with this `WWW-Authenticate` value,
    /// which points the client at the route's protected-resource metadata.
    McpUnauthorized {
        challenge: String,
    },
    FormTooLarge,
    BodyTimeout,
    BodyUnreadable,
    TunnelBackend,
    /// The upstream failed or the request died on the way (from `fail_to_proxy`).
    Upstream(UpstreamFault),
    /// A refused MCP request: JSON-RPC errors for its messages (`respond::mcp`).
    Mcp(Box<super::mcp::McpRefusal>),
    /// A sign-in, sign-out or device-page problem: its own status, page title and explanation.
    SignIn {
        status: StatusCode,
        title: &'static str,
        detail: Cow<'static, str>,
    },
}

/// How a proxied request failed, as `fail_to_proxy` classifies Pingora's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    Unreachable,
    Timeout,
    ClientTimeout,
    /// A status a filter raised on purpose (413 for a chunked body over the limit, …).
    Status(u16),
}

impl Refusal {
    /// A sign-in problem page.
    pub fn sign_in(
        status: StatusCode,
        title: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Refusal {
        Refusal::SignIn {
            status,
            title,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use Refusal::*;
        let code = match self {
            Malformed(_) | UnderscoreHeader | BadPath(_) | BadHost | HostMismatch | TunnelOnly
            | UpgradeNotAllowed | BadRedirect | BodyUnreadable | AmbiguousSession
            | AmbiguousCredentials | VerifyRequest(_) => 400,
            TooManyHeaders | HeadersTooLarge => 431,
            SignInRateLimited => 429,
            AuthenticateOnly | NotFound | NoRoute => 404,
            WebsocketOrigin | Forbidden(_) | SignInNotConfigured | NotAnIngress | VerifyNoRoute => {
                403
            }
            BodyTooLarge | FormTooLarge => 413,
            Misdirected => 421,
            ClientCertificate(_) => 495,
            SignInRequired { location: Some(_) }
            | DeviceRequired { location: Some(_) }
            | ReauthenticationRequired { location: Some(_) } => 302,
            SignInRequired { location: None }
            | ReauthenticationRequired { location: None }
            | BearerRejected
            | BearerRequired
            | McpUnauthorized { .. } => 401,
            DeviceRequired { location: None } => 450,
            UrlTooLong => 414,
            NoHealthyUpstream | StoreUnavailable | UpstreamOverloaded => 503,
            BodyTimeout => 408,
            TunnelBackend | UpstreamUnresolved | UpstreamCredentials => 502,
            Upstream(f) => match f {
                UpstreamFault::Unreachable => 502,
                UpstreamFault::Timeout => 504,
                UpstreamFault::ClientTimeout => 408,
                UpstreamFault::Status(c) => *c,
            },
            SignIn { status, .. } => return *status,
            Mcp(m) => return m.status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
    }

    /// What went wrong, for people (the page text, and the JSON `error` of most refusals).
    pub fn message(&self) -> Cow<'static, str> {
        use Refusal::*;
        Cow::Borrowed(match self {
            Malformed(why) => why,
            TooManyHeaders => "too many request headers",
            HeadersTooLarge => "request headers too large",
            UnderscoreHeader => "header names with underscores are not allowed",
            BadPath(why) => return Cow::Owned(why.clone()),
            BadHost => "missing or invalid Host header",
            HostMismatch => "the request target's host differs from the Host header",
            SignInRateLimited => "too many sign-in attempts; try again in a moment",
            AuthenticateOnly => "this node serves only the authenticate service",
            NotFound => "not found",
            NoRoute => "no route matches this host and path",
            TunnelOnly => "this is a TCP tunnel route: connect with `vallum tcp`",
            UpgradeNotAllowed => "this route does not allow this connection upgrade",
            WebsocketOrigin => "websocket origin not allowed",
            BodyTooLarge => "request body too large",
            Misdirected => "this connection was made for another host; reconnect for this one",
            ClientCertificate(Reason::ClientCertificateRequired) => {
                "This page needs a client certificate, and your browser did not present one."
            }
            ClientCertificate(_) => "The client certificate your browser presented is not trusted here (unknown issuer, expired or revoked).",
            Forbidden(_) => "You are not allowed to see this page.",
            SignInRequired { .. } => "sign in to see this page",
            ReauthenticationRequired { .. } => {
                "this page needs a recent sign-in at the identity provider; sign in again"
            }
            DeviceRequired { .. } => "this page needs a device you have not proven in this session",
            SignInNotConfigured => "sign-in is not configured",
            NotAnIngress => "this address is not an ingress allowed to ask (forward_auth_ingresses)",
            VerifyRequest(why) => why,
            VerifyNoRoute => "no route covers this URL",
            UrlTooLong => "this URL is too long to leave and come back to",
            NoHealthyUpstream => "no healthy upstream",
            UpstreamOverloaded => "the upstream is at its configured limit; try again in a moment",
            UpstreamUnresolved => "the upstream's host name does not resolve",
            UpstreamCredentials => "cannot get the identity token the upstream requires",
            BadRedirect => "cannot build redirect location",
            StoreUnavailable => {
                "the session store cannot be reached right now; try again in a moment"
            }
            AmbiguousSession => {
                "this request carries two different sessions for this site; clear its cookies and sign in again"
            }
            AmbiguousCredentials => {
                "this request carries both a bearer token and a session cookie; send only one"
            }
            BearerRejected => "the bearer token was not accepted",
            BearerRequired => "this route needs a bearer token",
            McpUnauthorized { .. } => "this MCP server needs an access token",
            FormTooLarge => "form too large",
            BodyTimeout => "the request body did not arrive in time",
            BodyUnreadable => "cannot read the request body",
            TunnelBackend => "the tunnel's backend could not be reached",
            Upstream(UpstreamFault::Unreachable) => {
                "the upstream could not be reached or answered badly"
            }
            Upstream(UpstreamFault::Timeout) => "the upstream did not answer in time",
            Upstream(_) => self.status().canonical_reason().unwrap_or("error"),
            SignIn { detail, .. } => return detail.clone(),
            Mcp(m) => {
                return m
                    .errors
                    .first()
                    .map_or(Cow::Borrowed("refused"), |e| Cow::Owned(e.message.clone()))
            }
        })
    }

    /// The page title for browsers.
    fn title(&self) -> Cow<'static, str> {
        match self {
            Refusal::StoreUnavailable => "Sessions unavailable".into(),
            Refusal::ClientCertificate(_) => "495 SSL Certificate Error".into(),
            Refusal::SignIn { title, .. } => (*title).into(),
            other => {
                let s = other.status();
                format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or("")).into()
            }
        }
    }

    /// Whether the connection is closed after the reply.
    fn closes(&self) -> bool {
        matches!(
            self,
            Refusal::Malformed(_) | Refusal::TunnelOnly | Refusal::UpgradeNotAllowed
        )
    }

    /// The JSON `error`: Pomerium's code where it has one, else the message.
    fn json_error(&self) -> Cow<'static, str> {
        match self {
            Refusal::Forbidden(_) => "forbidden".into(),
            Refusal::ClientCertificate(r) => r.as_str().into(),
            Refusal::SignInRequired { .. } => "user-unauthenticated".into(),
            Refusal::BearerRejected => "invalid_token".into(),
            Refusal::McpUnauthorized { challenge } if challenge.contains("invalid_token") => {
                "invalid_token".into()
            }
            Refusal::ReauthenticationRequired { .. } => "reauthentication-required".into(),
            Refusal::DeviceRequired { .. } => "device-unauthenticated".into(),
            other => other.message(),
        }
    }
}

/// How Vallum's own answers are drawn, chosen once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A browser: pages, and redirects to sign in.
    Html,
    /// An API client (XHR, JSON, `*/*`, anything that does not ask for HTML): JSON bodies, and
    /// 401/450 instead of redirects.
    Json,
    /// A gRPC client: `grpc-status` and `grpc-message`, never a redirect (`respond::grpc`).
    Grpc,
}

impl Format {
    /// Browsers send `Accept: text/html…` for navigation (or no `Accept` at all); scripts that
    /// say `X-Requested-With: XMLHttpRequest` are API clients whatever they accept.
    pub fn of(headers: &HeaderMap) -> Format {
        if super::grpc::is_grpc(headers) {
            return Format::Grpc;
        }
        let xhr = headers
            .get("x-requested-with")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
        let html = match headers.get(http::header::ACCEPT) {
            None => true,
            Some(a) => a.to_str().is_ok_and(|a| a.contains("text/html")),
        };
        if html && !xhr {
            Format::Html
        } else {
            Format::Json
        }
    }
}

/// Everything needed to answer one request in Vallum's own voice.
#[derive(Clone, Copy)]
pub struct Answer<'a> {
    pub format: Format,
    pub request_id: &'a str,
    /// The serving snapshot's branding; `None` before any snapshot (Vallum's own).
    pub branding: Option<&'a Branding>,
}

impl Answer<'_> {
    pub fn wants_json(&self) -> bool {
        self.format != Format::Html
    }

    /// A page with the operator's branding.
    pub fn page(&self, status: StatusCode, title: &str, body_html: &str) -> Reply {
        Reply::html(status, self.page_html(title, body_html))
    }

    pub fn page_html(&self, title: &str, body_html: &str) -> String {
        page(self.branding, title, body_html)
    }

    /// The one mapping from a refusal to a response.
    pub fn refuse(&self, refusal: Refusal) -> Reply {
        let status = refusal.status();
        let mut reply = match &refusal {
            Refusal::SignInRequired {
                location: Some(url),
            }
            | Refusal::DeviceRequired {
                location: Some(url),
            }
            | Refusal::ReauthenticationRequired {
                location: Some(url),
            } => Reply::found(url),
            Refusal::Mcp(m) => super::mcp::reply(m, self.request_id),
            _ if self.format == Format::Grpc => {
                super::grpc::reply(&refusal, status, self.request_id)
            }
            _ if self.format == Format::Json => self.json(&refusal, status),
            _ => self.html(&refusal, status),
        };
        if refusal == Refusal::SignInRateLimited {
            reply = reply.with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        let challenge = match &refusal {
            Refusal::BearerRejected => {
                Some(HeaderValue::from_static("Bearer error=\"invalid_token\""))
            }
            Refusal::BearerRequired => Some(HeaderValue::from_static("Bearer")),
            Refusal::McpUnauthorized { challenge } => HeaderValue::from_str(challenge).ok(),
            _ => None,
        };
        if let Some(c) = challenge {
            reply = reply.with_header(http::header::WWW_AUTHENTICATE, c);
        }
        reply.close = refusal.closes();
        reply
    }

    fn json(&self, refusal: &Refusal, status: StatusCode) -> Reply {
        let mut body = serde_json::json!({
            "error": refusal.json_error(),
            "status": status.as_u16(),
            "request_id": self.request_id,
        });
        if let Refusal::Forbidden(reasons) = refusal {
            let reasons: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
            body["reasons"] = serde_json::json!(reasons);
        }
        Reply::json(status, &body)
    }

    fn html(&self, refusal: &Refusal, status: StatusCode) -> Reply {
        let rid = escape(self.request_id);
        let body = match refusal {
            Refusal::Forbidden(reasons) => {
                let items: String = reasons
                    .iter()
                    .map(|r| format!("<li><code>{r}</code></li>"))
                    .collect();
                format!(
                    "<p>{}</p><ul>{items}</ul><p>Request id: <code>{rid}</code></p>\
                     <p><a href=\"/.pomerium/\">Who am I signed in as?</a></p>",
                    escape(&refusal.message())
                )
            }
            Refusal::ClientCertificate(reason) => format!(
                "<p>{}</p><ul><li><code>{reason}</code></li></ul><p>Install the certificate your \
                 organisation issued for this device, then reconnect.</p><p>Request id: <code>{rid}</code></p>",
                escape(&refusal.message())
            ),
            _ => format!(
                "<p>{}</p><p class=\"rid\">Request id: <code>{rid}</code></p>",
                escape(&refusal.message())
            ),
        };
        self.page(status, &refusal.title(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(format: Format) -> Answer<'static> {
        Answer {
            format,
            request_id: "rid-1",
            branding: None,
        }
    }

    fn body(r: &Reply) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    #[test]
    fn api_clients_get_json_with_the_id_and_browsers_a_page() {
        let h = |accept: Option<&str>| {
            let mut m = HeaderMap::new();
            if let Some(a) = accept {
                m.insert(http::header::ACCEPT, a.parse().unwrap());
            }
            Format::of(&m)
        };
        assert_eq!(h(None), Format::Html);
        assert_eq!(h(Some("text/html,application/xhtml+xml")), Format::Html);
        assert_eq!(h(Some("*/*")), Format::Json);
        assert_eq!(h(Some("application/json")), Format::Json);
        let mut xhr = HeaderMap::new();
        xhr.insert("x-requested-with", "XMLHttpRequest".parse().unwrap());
        assert_eq!(Format::of(&xhr), Format::Json);

        for refusal in [
            Refusal::StoreUnavailable,
            Refusal::NoRoute,
            Refusal::BodyTooLarge,
        ] {
            let json = answer(Format::Json).refuse(refusal.clone());
            assert_eq!(json.content_type, "application/json");
            let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
            assert_eq!(v["request_id"], "rid-1");
            assert_eq!(v["status"], refusal.status().as_u16());
            let html = answer(Format::Html).refuse(refusal);
            assert!(html.content_type.starts_with("text/html"));
            assert!(body(&html).contains("rid-1"));
        }
    }

    #[test]
    fn a_grpc_refusal_closes_and_asks_to_wait_as_any_other() {
        let a = answer(Format::Grpc);
        let r = a.refuse(Refusal::UpgradeNotAllowed);
        assert_eq!(r.content_type, "application/grpc");
        assert!(
            r.close,
            "a refusal that ends the connection ends it for gRPC too"
        );
        let r = a.refuse(Refusal::SignInRateLimited);
        assert!(r.extra.iter().any(|(k, _)| k == http::header::RETRY_AFTER));
    }

    #[test]
    fn pomerium_codes_and_statuses() {
        let a = answer(Format::Json);
        let r = a.refuse(Refusal::Forbidden(vec![Reason::EmailUnauthorized]));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status.as_u16(), &v["error"]), (403, &"forbidden".into()));
        assert_eq!(v["reasons"], serde_json::json!(["email-unauthorized"]));
        let r = a.refuse(Refusal::SignInRequired { location: None });
        assert_eq!(r.status.as_u16(), 401);
        let r = a.refuse(Refusal::DeviceRequired { location: None });
        assert_eq!(r.status.as_u16(), 450);
        let r = a.refuse(Refusal::ClientCertificate(Reason::InvalidClientCertificate));
        assert_eq!(r.status.as_u16(), 495);
        assert!(body(&r).contains("invalid-client-certificate"));
        let r = answer(Format::Html).refuse(Refusal::SignInRequired {
            location: Some("https://auth.example/x".into()),
        });
        assert_eq!(r.status.as_u16(), 302);
        assert_eq!(r.location.unwrap(), "https://auth.example/x");
    }

    #[test]
    fn framing_faults_close_and_rate_limits_say_when() {
        let a = answer(Format::Html);
        assert!(
            a.refuse(Refusal::Malformed("duplicate Content-Length"))
                .close
        );
        assert!(a.refuse(Refusal::UpgradeNotAllowed).close);
        assert!(!a.refuse(Refusal::NoRoute).close);
        let r = a.refuse(Refusal::SignInRateLimited);
        assert_eq!(r.status.as_u16(), 429);
        assert!(r
            .extra
            .iter()
            .any(|(k, v)| k == http::header::RETRY_AFTER && v == "1"));
    }

    #[test]
    fn page_text_is_escaped() {
        let r = answer(Format::Html).refuse(Refusal::sign_in(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            "The identity provider said: <script>",
        ));
        assert!(!body(&r).contains("<script>"));
        assert!(body(&r).contains("&lt;script&gt;"));
    }
}
