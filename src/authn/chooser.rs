//! The sign-in page of a route with `idp_choices`: the user picks the provider to sign in with.
//! Someone already signed in with one of them goes straight through (single sign-on); everyone
//! else sees one link per provider, each the same signed sign-in link with `idp` added.

use super::handoff::handoff;
use super::sign_in::choice_key;
use super::*;
use crate::respond::pages::escape;

/// Most choices one page lists (the list travels in a URL).
const MAX_CHOICES: usize = 16;

pub(super) async fn choose(
    auth: &Auth<'_>,
    state: &Arc<AuthState>,
    req: &Request<'_>,
    target: &Url,
    list: &str,
) -> Reply {
    let keys: Vec<&str> = list.split(',').map(choice_key).take(MAX_CHOICES).collect();
    for key in &keys {
        let name = auth_cookie(auth, key);
        match session_for(auth, state, req.cookies, &name, req.host).await {
            Ok(Some(session)) => return handoff(auth, target, &session),
            Ok(None) => {}
            Err(e) => return req.answer.refuse(e.into()),
        }
    }
    let mut items = String::new();
    for key in &keys {
        // Only providers some route names: the list is not signed.
        let Some(label) = label(req, key) else {
            continue;
        };
        let mut link = Url::parse("http://x/.pomerium/sign_in").unwrap_or_else(|_| target.clone());
        {
            let mut q = link.query_pairs_mut();
            for (k, v) in req
                .query
                .iter()
                .filter(|(k, _)| k != "idp_choices" && k != "idp")
            {
                q.append_pair(k, v);
            }
            q.append_pair("idp", if key.is_empty() { GLOBAL_CHOICE } else { key });
        }
        let href = format!("{}?{}", link.path(), link.query().unwrap_or_default());
        items.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>",
            escape(&href),
            escape(&label)
        ));
    }
    if items.is_empty() {
        return bad_request(
            req,
            "none of the sign-in providers this link names is configured",
        );
    }
    let body = format!(
        "<p>Choose how to sign in to <b>{}</b>:</p><ul class=\"choices\">{items}</ul>",
        escape(target.host_str().unwrap_or_default())
    );
    Reply::html(StatusCode::OK, req.answer.page_html("Sign in", &body))
}

/// What the routes call provider `key` on the sign-in page.
fn label(req: &Request<'_>, key: &str) -> Option<String> {
    req.routes
        .iter()
        .flat_map(|r| r.idps.iter())
        .find(|i| i.key == key && !i.label.is_empty())
        .map(|i| i.label.clone())
}
