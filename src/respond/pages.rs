//! The few HTML pages Vallum shows (sign-in problems, sign-out, 403, the user page), drawn with
//! the branding of the snapshot serving the request (passed in: there is no global branding). Everything interpolated is escaped; nothing is loaded from elsewhere.

use crate::config::settings::Branding;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Vallum's mark, inline: pages make no external requests.
const MARK: &str = "<svg viewBox=\"0 0 32 32\" width=\"28\" height=\"28\" aria-hidden=\"true\"><rect width=\"32\" height=\"32\" rx=\"7\" fill=\"currentColor\"/>\
<path d=\"M8 8h16v8.5c0 5-3.6 8.2-8 9.5-4.4-1.3-8-4.5-8-9.5z\" fill=\"#fff\"/></svg>";

/// A whole page in the operator's branding (`None`: Vallum's own, for pages drawn before any
/// config, such as the demo's).
pub fn page(branding: Option<&Branding>, title: &str, body_html: &str) -> String {
    let default;
    let b = match branding {
        Some(b) => b,
        None => {
            default = Branding::default();
            &default
        }
    };
    let logo = match &b.logo_url {
        Some(u) => format!(
            "<img src=\"{}\" alt=\"\" width=\"28\" height=\"28\">",
            escape(u)
        ),
        None => MARK.to_string(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{t} · {n}</title><style>\
         :root{{--brand:{c}}}*{{box-sizing:border-box}}\
         body{{margin:0;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1f2933;background:#f4f6f8}}\
         header{{display:flex;align-items:center;gap:.6rem;padding:.9rem 1.5rem;background:#fff;border-bottom:3px solid var(--brand);color:var(--brand);font-weight:600}}\
         main{{max-width:44rem;margin:2.5rem auto;padding:0 1rem}}\
         .card{{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08),0 4px 16px rgba(0,0,0,.04);padding:1.75rem 2rem}}\
         h1{{margin:0 0 1rem;font-size:1.5rem}}h2{{font-size:1.1rem;margin:1.5rem 0 .5rem}}\
         table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.45rem .5rem;border-bottom:1px solid #e5e9ee;vertical-align:top}}\
         th{{width:11rem;color:#52606d;font-weight:500}}code{{background:#eef2f6;padding:.1rem .35rem;border-radius:4px;font-size:.9em}}\
         button{{font:inherit;background:var(--brand);color:#fff;border:0;border-radius:6px;padding:.55rem 1.2rem;cursor:pointer;margin-top:1.25rem}}\
         a{{color:var(--brand)}}ul{{padding-left:1.2rem}}\
         ul.choices{{list-style:none;padding:0}}.choices a{{display:block;text-align:center;text-decoration:none;font-weight:500;border:1px solid var(--brand);border-radius:6px;padding:.65rem 1rem;margin:.6rem 0}}.choices a:hover{{background:var(--brand);color:#fff}}.rid{{color:#52606d;font-size:.9rem;margin-top:1.25rem}}\
         footer{{text-align:center;color:#7b8794;font-size:.8rem;margin:2rem 0}}</style></head>\
         <body><header>{logo}<span>{n}</span></header><main><div class=\"card\"><h1>{t}</h1>{body_html}</div></main>\
         <footer>Protected by {n}</footer></body></html>",
        t = escape(title),
        n = escape(&b.name),
        c = escape(&b.color),
    )
}

pub fn sign_out_confirm(branding: Option<&Branding>, csrf: &str) -> String {
    page(
        branding,
        "Sign out?",
        &format!(
            "<form method=\"post\" action=\"/.pomerium/sign_out\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            escape(csrf)
        ),
    )
}

pub fn signed_out(branding: Option<&Branding>) -> String {
    page(branding, "Signed out", "<p>You have been signed out.</p>")
}
