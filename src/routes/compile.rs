//! `RawRoute` → `Route`: parse `from`/`to`, check that the options fit together, compile
//! regexes and headers, and build (or reuse) the upstream pool.

use super::route::*;
use crate::config::error::Errors;
use crate::config::raw::RawRoute;
use crate::policy::{parse_policy, Legacy, Policy};
use crate::upstream::compile::Ctx;
use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;

pub fn compile(
    raw: &RawRoute,
    index: usize,
    base: &str,
    ctx: &mut Ctx<'_>,
    errs: &mut Errors,
) -> Option<Route> {
    let mut e = Errors::default();
    let p = |k: &str| format!("{base}.{k}");

    let (host, port) = super::matching::from(raw, &p, &mut e);
    let tunnel = raw.from.as_deref().is_some_and(|f| f.starts_with("tcp+"));

    let path = super::matching::path(raw, &p, &mut e);
    let rewrite = super::matching::rewrite(raw, &path, &p, &mut e);
    let action = action(raw, tunnel, base, ctx, &mut e);
    let access = compile_access(raw, base, ctx, &mut e);
    let client_ca = route_client_ca(raw, &p, ctx, &mut e);
    let serverless_audience = serverless_audience(raw, &action, &p, &mut e);
    let strip_method_override = matches!(&access, Access::Policy(p) if p.mentions_method());
    let headers = super::shaping::headers(raw, &ctx.settings.response_headers, &p, &mut e);
    let auth = ctx.settings.auth.as_ref();
    let pass_identity_headers = raw
        .pass_identity_headers
        .unwrap_or_else(|| auth.is_some_and(|a| a.pass_identity_headers));
    let issuer_uri = match &raw.jwt_issuer_format {
        Some(f) => crate::config::auth::issuer_format(Some(f), &p("jwt_issuer_format"), &mut e),
        None => auth.is_some_and(|a| a.issuer_uri),
    };

    let host_header = super::shaping::host_header(raw, &p, &mut e);
    let upgrades = upgrades(raw, &ctx.settings.allow_upgrades);

    let timeout = raw
        .timeout
        .map(|d| d.0)
        .unwrap_or(ctx.settings.default_upstream_timeout);
    let id = route_id(raw, index);

    let (bearer, session_idle, workload_issuers) =
        session_options(raw, &p, auth, &ctx.settings.workload_issuers, &mut e);
    let idps = route_idps(raw, base, auth, &mut ctx.files, &mut e);
    let mcp = route_mcp(raw, base, &access, ctx, &mut e);
    let mcp_client = crate::config::mcp::is_client(raw.mcp.as_ref(), base, &mut e);
    let breaker = breaker(raw, &p, ctx.settings.circuit_limits, &mut e);
    let max_auth_age =
        crate::config::auth::minute_or_more(raw.max_auth_age, &p("max_auth_age"), &mut e).flatten();

    let ok = e.is_empty();
    errs.extend(e);
    if !ok {
        return None;
    }
    Some(Route {
        client_ca,
        serverless_audience,
        id,
        listing: listing(raw),
        groups_filter: groups_filter(raw, &access, auth),
        host: host?,
        port,
        path,
        rewrite,
        action: action?,
        access,
        host_header,
        set_request_headers: headers.set_request_headers,
        pass_identity_headers,
        issuer_uri,
        bearer,
        access_token_audiences: raw
            .idp_access_token_allowed_audiences
            .clone()
            .or_else(|| auth.map(|a| a.access_token_audiences.clone()))
            .unwrap_or_default(),
        workload_issuers,
        idps,
        mcp,
        mcp_client,
        session_idle,
        max_auth_age,
        breaker,
        remove_request_headers: headers.remove_request_headers,
        response_headers: headers.response_headers,
        rewrite_response_headers: headers.rewrite_response_headers,
        upgrades,
        timeout: Some(timeout).filter(|d| !d.is_zero()),
        timeout_explicit: raw.timeout.is_some(),
        idle_timeout: raw.idle_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        max_request_bytes: raw.max_request_bytes.or(ctx.settings.ops.max_request_bytes),
        allow_unverified_email: raw.allow_unverified_email,
        websocket_origins: raw
            .websocket_allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect(),
        strip_method_override,
        metrics: Default::default(),
    })
}

/// The upgrade tokens a route admits: the global `allow_upgrades`, its own, and the
/// `allow_websockets`/`allow_spdy` switches.
fn upgrades(raw: &RawRoute, global: &[String]) -> Vec<String> {
    let mut upgrades = global.to_vec();
    upgrades.extend(raw.allow_upgrades.iter().map(|u| u.to_ascii_lowercase()));
    if raw.allow_websockets {
        upgrades.push("websocket".into());
    }
    if raw.allow_spdy {
        upgrades.push("spdy/3.1".into());
    }
    upgrades
}

/// What the route does: exactly one of `to` (a pool, or a tunnel for `tcp+` routes),
/// `redirect` and `response`.
fn action(
    raw: &RawRoute,
    tunnel: bool,
    base: &str,
    ctx: &mut Ctx<'_>,
    e: &mut Errors,
) -> Option<Action> {
    let p = |k: &str| format!("{base}.{k}");
    let actions = [
        raw.to.is_some(),
        raw.redirect.is_some(),
        raw.response.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if actions != 1 {
        e.push(
            base.to_string(),
            if actions == 0 {
                "needs one of `to`, `redirect` or `response`"
            } else {
                "only one of `to`, `redirect` and `response` may be set"
            },
        );
    }
    if let Some(resp) = &raw.response {
        match StatusCode::from_u16(resp.status) {
            Ok(s) if resp.status >= 200 => Some(Action::Respond {
                status: s,
                body: Bytes::from(resp.body.clone()),
            }),
            _ => {
                e.push(
                    p("response.status"),
                    format!("{} is not a valid HTTP status (200-599)", resp.status),
                );
                None
            }
        }
    } else if let Some(r) = &raw.redirect {
        compile_redirect(r, base, e).map(Action::Redirect)
    } else if let (true, Some(to)) = (tunnel, &raw.to) {
        compile_tunnel(&to.0, &p("to"), ctx, e).map(Action::Tunnel)
    } else if let Some(to) = &raw.to {
        crate::upstream::compile::pool(raw, &to.0, base, ctx, e).map(Action::Upstream)
    } else {
        None
    }
}

/// `enable_google_cloud_serverless_authentication`: Pomerium's audience, `https://` and the host
/// of the (last) `to` URL.
fn serverless_audience(
    raw: &RawRoute,
    action: &Option<Action>,
    p: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> Option<Arc<str>> {
    if !raw.enable_google_cloud_serverless_authentication {
        return None;
    }
    match action {
        Some(Action::Upstream(pool)) => pool
            .targets
            .last()
            .map(|t| crate::upstream::serverless::audience(&t.host).into()),
        Some(_) => {
            e.push(
                p("enable_google_cloud_serverless_authentication"),
                "needs an HTTP upstream (`to`)",
            );
            None
        }
        None => None,
    }
}

/// `tls_downstream_client_ca(_file)`: Pomerium's deprecated per-route client CA, kept with its
/// meaning (this route wants a certificate this CA issued) and a warning naming its successor.
fn route_client_ca(
    raw: &RawRoute,
    p: &dyn Fn(&str) -> String,
    ctx: &mut Ctx<'_>,
    e: &mut Errors,
) -> Option<Arc<crate::tls::client_ca::ClientCa>> {
    use crate::config::pem::{self, PemSource};
    let key = match raw.tls_downstream_client_ca_file {
        Some(_) => "tls_downstream_client_ca_file",
        None => "tls_downstream_client_ca",
    };
    let src = match (
        &raw.tls_downstream_client_ca,
        &raw.tls_downstream_client_ca_file,
    ) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            e.push(
                p(key),
                "tls_downstream_client_ca and tls_downstream_client_ca_file cannot both be set",
            );
            return None;
        }
        (Some(v), None) => PemSource::Inline(v.clone()),
        (None, Some(f)) => {
            ctx.files.push(std::path::PathBuf::from(f));
            PemSource::File(std::path::PathBuf::from(f))
        }
    };
    if !ctx.settings.tls() {
        e.push(
            p(key),
            "client certificates need TLS; insecure_server is on",
        );
        return None;
    }
    let anchors = e.check(p(key), pem::read(&src).and_then(|b| pem::certs(&b)))?;
    let ca = e.check(
        p(key),
        crate::tls::client_ca::ClientCa::new(
            crate::tls::client_ca::Enforcement::PolicyWithDefaultDeny,
            anchors,
            Vec::new(),
            None,
            Vec::new(),
        ),
    )?;
    e.warn(
        p(key),
        "deprecated in Pomerium (downstream_mtls replaced it); Vallum keeps its meaning: this route answers 495 unless the request's client certificate was issued by this CA",
    );
    Some(Arc::new(ca))
}

/// Pomerium's access keys → `Public`, or a compiled policy (legacy keys OR-ed into one allow
/// rule, then the PPL rules). A route that says nothing is denied.
fn compile_access(raw: &RawRoute, base: &str, ctx: &mut Ctx<'_>, e: &mut Errors) -> Access {
    let p = |k: &str| format!("{base}.{k}");
    // Pomerium refuses public access beside these allow-lists; a `policy` (or claims) beside it
    // is OR-ed with "accept", so only its deny rules still bite.
    let allow_lists = raw.allowed_users.is_some()
        || raw.allowed_domains.is_some()
        || raw.allow_any_authenticated_user;
    if raw.allow_public_unauthenticated_access && allow_lists {
        e.push(
            p("allow_public_unauthenticated_access"),
            "cannot be combined with allowed_users, allowed_domains or allow_any_authenticated_user",
        );
    }
    let more_rules = raw.policy.is_some() || raw.allowed_idp_claims.is_some();
    if raw.allow_public_unauthenticated_access && !raw.cors_allow_preflight && !more_rules {
        return Access::Public;
    }
    let mut claims = Vec::new();
    match &raw.allowed_idp_claims {
        None => {}
        Some(serde_yaml_ng::Value::Mapping(m)) => {
            for (k, v) in m {
                let name = crate::policy::matchers::scalar(k).unwrap_or_default();
                let values: Vec<String> = match v {
                    serde_yaml_ng::Value::Sequence(s) => s
                        .iter()
                        .filter_map(crate::policy::matchers::scalar)
                        .collect(),
                    other => crate::policy::matchers::scalar(other).into_iter().collect(),
                };
                claims.push((name, values));
            }
        }
        Some(_) => e.push(
            p("allowed_idp_claims"),
            "expected a map of claim name to a list of values",
        ),
    }
    let legacy = Legacy {
        allowed_users: raw.allowed_users.as_deref().unwrap_or(&[]),
        allowed_domains: raw.allowed_domains.as_deref().unwrap_or(&[]),
        allowed_idp_claims: &claims,
        allow_public: raw.allow_public_unauthenticated_access,
        allow_any_authenticated_user: raw.allow_any_authenticated_user,
        cors_allow_preflight: raw.cors_allow_preflight,
    };
    let mut policy = Policy::default();
    policy.rules.extend(legacy.rule());
    if let Some(v) = &raw.policy {
        match parse_policy(v, &p("policy")) {
            Ok(ppl) => policy.rules.extend(ppl.rules),
            Err(err) => e.push(err.path, err.message),
        }
    }
    ctx.needs_sign_in |= policy.needs_identity();
    // A route that takes workload tokens has its users without anyone signing in.
    let workloads = raw.bearer_token_format.as_deref() == Some("jwt");
    if policy.needs_identity() && ctx.settings.auth.is_none() && !workloads {
        e.push(
            base.to_string(),
            "this route's access rules need a signed-in user: set authenticate_service_url and the idp_* keys",
        );
    }
    Access::Policy(Arc::new(policy))
}

/// `to` of a tunnel route: `tcp://host:port` (or a list). Names are looked up when a client
/// opens a tunnel, like other upstreams.
fn compile_tunnel(
    to: &[String],
    path: &str,
    ctx: &Ctx<'_>,
    e: &mut Errors,
) -> Option<Arc<crate::upstream::dns::Names>> {
    let mut hosts = Vec::new();
    for (i, t) in to.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(authority) = t.strip_prefix("tcp://").map(|a| a.trim_end_matches('/')) else {
            e.push(at, "a tcp+ route's `to` must be tcp://host:port");
            continue;
        };
        match url::Url::parse(&format!("tcp://{authority}")) {
            Ok(u) if u.port().is_some() && u.host_str().is_some() => {
                let host = u.host_str().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                hosts.push((host.to_string(), u.port().unwrap_or_default()));
            }
            _ => e.push(at, format!("{authority:?} is not host:port")),
        }
    }
    (!hosts.is_empty() && hosts.len() == to.len()).then(|| {
        Arc::new(crate::upstream::dns::Names::new(
            hosts,
            Arc::clone(&ctx.resolver),
        ))
    })
}

fn compile_redirect(
    r: &crate::config::raw::RawRedirect,
    base: &str,
    e: &mut Errors,
) -> Option<RedirectSpec> {
    let p = |k: &str| format!("{base}.redirect.{k}");
    let status = match r.response_code.as_ref().map(|t| t.0.to_ascii_uppercase()) {
        None => StatusCode::MOVED_PERMANENTLY,
        Some(code) => match code.as_str() {
            "301" | "MOVED_PERMANENTLY" => StatusCode::MOVED_PERMANENTLY,
            "302" | "FOUND" => StatusCode::FOUND,
            "303" | "SEE_OTHER" => StatusCode::SEE_OTHER,
            "307" | "TEMPORARY_REDIRECT" => StatusCode::TEMPORARY_REDIRECT,
            "308" | "PERMANENT_REDIRECT" => StatusCode::PERMANENT_REDIRECT,
            other => {
                e.push(
                    p("response_code"),
                    format!("{other} is not a redirect code (301, 302, 303, 307, 308)"),
                );
                return None;
            }
        },
    };
    if r.path_redirect.is_some() && r.prefix_rewrite.is_some() {
        e.push(
            p("path_redirect"),
            "path_redirect and prefix_rewrite cannot both be set",
        );
    }
    let scheme = if r.https_redirect == Some(true) {
        Some("https".to_string())
    } else {
        r.scheme_redirect.clone()
    };
    Some(RedirectSpec {
        scheme,
        host: r.host_redirect.clone(),
        port: r.port_redirect,
        path: r.path_redirect.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        status,
        strip_query: r.strip_query.unwrap_or(false),
    })
}

/// The route's `circuit_breaker_thresholds`, else the global ones.
fn breaker(
    raw: &RawRoute,
    p: &impl Fn(&str) -> String,
    global: Option<crate::config::breaker::CircuitLimits>,
    e: &mut Errors,
) -> Option<Arc<crate::upstream::breaker::Breaker>> {
    match &raw.circuit_breaker_thresholds {
        Some(c) => crate::config::breaker::compile(c, &p("circuit_breaker_thresholds"), e),
        None => global,
    }
    .map(crate::upstream::breaker::Breaker::new)
}

/// The route's `bearer_token_format` and `session_idle_timeout` (else the global ones), and the
/// workload issuers a `jwt` route accepts.
#[allow(clippy::type_complexity)]
fn session_options(
    raw: &RawRoute,
    p: &impl Fn(&str) -> String,
    auth: Option<&crate::config::auth::AuthSettings>,
    issuers: &[Arc<crate::config::workload::WorkloadIssuer>],
    e: &mut Errors,
) -> (
    crate::config::auth::BearerFormat,
    Option<std::time::Duration>,
    Arc<[Arc<crate::config::workload::WorkloadIssuer>]>,
) {
    let bearer = crate::config::auth::bearer_format(
        raw.bearer_token_format.as_deref(),
        &p("bearer_token_format"),
        e,
    )
    .or_else(|| auth.map(|a| a.bearer))
    .unwrap_or_default();
    let idle = crate::config::auth::minute_or_more(
        raw.session_idle_timeout,
        &p("session_idle_timeout"),
        e,
    )
    .unwrap_or_else(|| auth.and_then(|a| a.idle_timeout));
    let workload = crate::config::workload::for_route(
        raw.identity_providers.as_deref(),
        bearer == crate::config::auth::BearerFormat::Jwt,
        issuers,
        &p("identity_providers"),
        e,
    );
    (bearer, idle, workload)
}

/// The route's own sign-in providers (`idp_*` overrides or `idp_choices`), which need the
/// sign-in settings.
fn route_idps(
    raw: &RawRoute,
    base: &str,
    auth: Option<&crate::config::auth::AuthSettings>,
    files: &mut Vec<std::path::PathBuf>,
    e: &mut Errors,
) -> Arc<[Arc<crate::config::route_idp::RouteIdp>]> {
    let own = crate::config::route_idp::RawIdpChoice {
        name: None,
        idp_provider: raw.idp_provider.clone(),
        idp_provider_url: raw.idp_provider_url.clone(),
        idp_client_id: raw.idp_client_id.clone(),
        idp_client_secret: raw.idp_client_secret.clone(),
        idp_client_secret_file: raw.idp_client_secret_file.clone(),
    };
    let idps = crate::config::route_idp::compile(
        &own,
        raw.idp_choices.as_deref(),
        auth.and_then(|a| a.idp.as_ref()),
        base,
        files,
        e,
    );
    if !idps.is_empty() && auth.is_none() {
        e.push(
            format!("{base}.idp_client_id"),
            "a route's own identity provider needs the sign-in settings (authenticate_service_url)",
        );
    }
    idps
}

/// `mcp.server`, and a warning for MCP criteria on a route without it (false there).
fn route_mcp(
    raw: &RawRoute,
    base: &str,
    access: &Access,
    ctx: &mut Ctx<'_>,
    e: &mut Errors,
) -> Option<Arc<crate::config::mcp::McpServer>> {
    let mcp = crate::config::mcp::compile(raw.mcp.as_ref(), base, e).map(Arc::new);
    if mcp.is_none() && matches!(access, Access::Policy(p) if p.mentions_mcp()) {
        ctx.warnings.push(format!(
            "{base}.policy: mcp_tool and mcp_tool_argument are false on a route without mcp.server (its bodies are not read)"
        ));
    }
    mcp
}

/// What the routes portal shows of the route.
fn listing(raw: &RawRoute) -> super::route::Listing {
    super::route::Listing {
        from: raw.from.clone().unwrap_or_default(),
        name: raw.name.clone(),
        description: raw.description.clone(),
        logo_url: raw.logo_url.clone(),
    }
}

/// The route's groups filter: the global list, the route's, and (when asked) the groups its
/// policy names; `None` when none of these applies.
fn groups_filter(
    raw: &RawRoute,
    access: &Access,
    auth: Option<&crate::config::auth::AuthSettings>,
) -> Option<Arc<crate::headers::GroupsFilter>> {
    let global = auth.map(|a| a.jwt_groups_filter.as_slice()).unwrap_or(&[]);
    let own = raw
        .jwt_groups_filter
        .as_ref()
        .map(|l| l.0.as_slice())
        .unwrap_or(&[]);
    let infer = raw.jwt_groups_filter_infer_from_ppl.unwrap_or(false);
    if global.is_empty() && own.is_empty() && !infer {
        return None;
    }
    let mut names: Vec<String> = global.iter().chain(own).cloned().collect();
    if let (true, Access::Policy(p)) = (infer, access) {
        names.extend(p.group_names());
    }
    Some(Arc::new(crate::headers::GroupsFilter::new(names)))
}

/// The route's `name`, else its `id`, else its position: how logs and metrics name it.
fn route_id(raw: &RawRoute, index: usize) -> Arc<str> {
    raw.name
        .clone()
        .or_else(|| raw.id.clone())
        .unwrap_or_else(|| format!("route-{index}"))
        .into()
}
