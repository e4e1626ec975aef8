//! The routes portal (Pomerium v0.29's, `runtime_flags.routes_portal`): `/.pomerium/routes`, a page
//! of the routes the signed-in user can open, and `/.pomerium/api/v1/routes`, the same as JSON.
//!
//! A route is listed when its policy allows this user a `GET` of the route's first page from
//! where they are now (their address, their proven devices, this time): the engine that decides
//! requests decides the listing, so a listed route opens and an unlisted one would refuse.
//! Pomerium approximates with the simple criteria of a policy; a route whose policy needs a
//! particular path, method or header may be missing here although some request to it is
//! allowed.

use super::*;
use crate::policy::{CertInput, Decision, Input};
use crate::routes::route::{Access, PathMatch, Route};
use serde_json::json;

/// One listed route, as Pomerium's portal API names its fields.
struct Listed<'a> {
    route: &'a Route,
    kind: &'static str,
}

/// `/.pomerium/routes` (`json`: false) or `/.pomerium/api/v1/routes`.
pub(super) async fn routes(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    json: bool,
) -> Reply {
    let s = match host_session(auth, state, req).await {
        Ok(s) => s,
        Err(e) => return req.answer.refuse(e.into()),
    };
    let Some(s) = s else {
        if json || req.answer.wants_json() {
            return req
                .answer
                .refuse(Refusal::SignInRequired { location: None });
        }
        let original = format!("{}://{}/.pomerium/routes", req.scheme, req.host);
        return Reply::found(host_sign_in_url(auth, req, &original).as_str());
    };
    let listed: Vec<Listed<'_>> = req
        .routes
        .iter()
        .filter(|r| opens_for(r, &s, req.client_ip))
        .map(|r| Listed {
            route: r,
            kind: kind(&r.listing.from),
        })
        .collect();
    if json {
        let items: Vec<serde_json::Value> = listed.iter().map(to_json).collect();
        return Reply::json(StatusCode::OK, &json!({ "routes": items }));
    }
    Reply::html(
        StatusCode::OK,
        req.answer.page_html("Routes", &page(&listed)),
    )
}

/// Whether `s` may open the route's first page now.
fn opens_for(route: &Route, s: &UserSession, client_ip: Option<std::net::IpAddr>) -> bool {
    let Access::Policy(policy) = &route.access else {
        return true;
    };
    let email = verified_email(Some(s), route.allow_unverified_email);
    let devices = s.proven_devices();
    let path = match &route.path {
        PathMatch::Prefix(p) | PathMatch::Exact(p) => p.as_str(),
        PathMatch::Any | PathMatch::Regex(_) => "/",
    };
    let input = Input {
        subject: Some(s.subject(email.as_deref())),
        method: "GET",
        path,
        client_ip,
        now: chrono::Utc::now(),
        cors_preflight: false,
        mcp: None,
        client_cert: CertInput::Absent,
        devices: &devices,
    };
    policy.evaluate(&input) == Decision::Allow
}

/// `http`, or `tcp` for a tunnel route (`tcp+https://`).
fn kind(from: &str) -> &'static str {
    if from.starts_with("tcp+") {
        "tcp"
    } else {
        "http"
    }
}

fn to_json(l: &Listed<'_>) -> serde_json::Value {
    let r = l.route;
    let mut v = json!({
        "id": &*r.id,
        "name": r.listing.name.as_deref().unwrap_or(&r.id),
        "type": l.kind,
        "from": r.listing.from,
        "description": r.listing.description.as_deref().unwrap_or(""),
        "logo_url": r.listing.logo_url.as_deref().unwrap_or(""),
    });
    if l.kind == "tcp" {
        let target = r.listing.from.trim_start_matches("tcp+https://");
        v["connect_command"] = json!(format!("vallum tcp {}", target.trim_end_matches('/')));
    }
    v
}

fn page(listed: &[Listed<'_>]) -> String {
    let e = pages::escape;
    if listed.is_empty() {
        return "<p>No route is open to you here.</p>".into();
    }
    let items: String = listed
        .iter()
        .map(|l| {
            let r = l.route;
            let name = e(r.listing.name.as_deref().unwrap_or(&r.id));
            let logo = r
                .listing
                .logo_url
                .as_deref()
                .filter(|u| u.starts_with("https://") || u.starts_with("data:image/"))
                .map(|u| {
                    format!(
                        "<img src=\"{}\" alt=\"\" width=\"32\" height=\"32\"> ",
                        e(u)
                    )
                })
                .unwrap_or_default();
            let title = match l.kind {
                "http" => format!("<a href=\"{}\">{name}</a>", e(&r.listing.from)),
                _ => format!(
                    "{name} <code>{}</code>",
                    e(to_json(l)["connect_command"].as_str().unwrap_or(""))
                ),
            };
            let description = r.listing.description.as_deref().map(e).unwrap_or_default();
            format!("<li class=\"route\">{logo}{title}<br><small>{description}</small></li>")
        })
        .collect();
    format!("<ul class=\"routes\">{items}</ul>")
}
