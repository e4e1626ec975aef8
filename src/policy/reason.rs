//! Why a policy refused a request, as a type: the proxy decides between 403, 495 and 450 (and a
//! sign-in or device detour) by matching these, and logs and JSON bodies carry Pomerium's
//! reason strings from `as_str`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Accept,
    Reject,
    UserUnauthenticated,
    EmailUnauthorized,
    DomainUnauthorized,
    UserUnauthorized,
    ClaimUnauthorized,
    GroupsUnauthorized,
    HttpMethodUnauthorized,
    HttpPathUnauthorized,
    SourceIpUnauthorized,
    NonCorsRequest,
    DateUnauthorized,
    DayOfWeekUnauthorized,
    TimeOfDayUnauthorized,
    /// No client certificate was presented.
    ClientCertificateRequired,
    /// A certificate was presented and is not trusted.
    InvalidClientCertificate,
    /// A trusted certificate that the route's matchers do not accept.
    ClientCertificateUnauthorized,
    /// No device has been proven in this session.
    DeviceUnauthenticated,
    /// A proven device that the route does not accept.
    DeviceUnauthorized,
    /// The session went unused longer than `session_idle_timeout` and ended.
    SessionIdle,
    /// The user authenticated at the IdP longer ago than the route's `max_auth_age`.
    ReauthenticationRequired,
    /// A workload bearer token (`bearer_token_format: jwt`) that did not verify.
    InvalidBearerToken,
    /// A workload bearer token and a session cookie on one request.
    AmbiguousCredentials,
    /// An MCP tool call the policy does not allow by its tool name (`mcp_tool`).
    McpToolUnauthorized,
    /// An MCP tool call the policy does not allow by its arguments (`mcp_tool_argument`).
    McpArgumentUnauthorized,
    /// An MCP tool call over the route's `rate_limits` for this user and tool.
    McpRateLimited,
}

impl Reason {
    /// Pomerium's spelling, as logs, metrics and JSON bodies show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accept => "accept",
            Reason::Reject => "reject",
            Reason::UserUnauthenticated => "user-unauthenticated",
            Reason::EmailUnauthorized => "email-unauthorized",
            Reason::DomainUnauthorized => "domain-unauthorized",
            Reason::UserUnauthorized => "user-unauthorized",
            Reason::ClaimUnauthorized => "claim-unauthorized",
            Reason::GroupsUnauthorized => "groups-unauthorized",
            Reason::HttpMethodUnauthorized => "http-method-unauthorized",
            Reason::HttpPathUnauthorized => "http-path-unauthorized",
            Reason::SourceIpUnauthorized => "source-ip-unauthorized",
            Reason::NonCorsRequest => "non-cors-request",
            Reason::DateUnauthorized => "date-unauthorized",
            Reason::DayOfWeekUnauthorized => "day-of-week-unauthorized",
            Reason::TimeOfDayUnauthorized => "time-of-day-unauthorized",
            Reason::ClientCertificateRequired => "client-certificate-required",
            Reason::InvalidClientCertificate => "invalid-client-certificate",
            Reason::ClientCertificateUnauthorized => "client-certificate-unauthorized",
            Reason::DeviceUnauthenticated => "device-unauthenticated",
            Reason::DeviceUnauthorized => "device-unauthorized",
            Reason::SessionIdle => "session-idle",
            Reason::ReauthenticationRequired => "reauthentication-required",
            Reason::InvalidBearerToken => "invalid-bearer-token",
            Reason::AmbiguousCredentials => "ambiguous-credentials",
            Reason::McpToolUnauthorized => "mcp-tool-unauthorized",
            Reason::McpArgumentUnauthorized => "mcp-tool-argument-unauthorized",
            Reason::McpRateLimited => "mcp-rate-limited",
        }
    }

    /// Signing in cannot fix it: the client certificate is missing or untrusted (answered 495).
    pub fn is_certificate_problem(self) -> bool {
        matches!(
            self,
            Reason::ClientCertificateRequired | Reason::InvalidClientCertificate
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
