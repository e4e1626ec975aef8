//! The few HTML pages the sign-in flow shows. Everything interpolated is escaped.

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

pub fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         button{{font-size:1rem;padding:.5rem 1rem}}</style></head><body><h1>{t}</h1>{body_html}</body></html>",
        t = escape(title)
    )
}

pub fn sign_out_confirm(csrf: &str) -> String {
    page(
        "Sign out?",
        &format!(
            "<form method=\"post\" action=\"/.pomerium/sign_out\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            escape(csrf)
        ),
    )
}

pub fn signed_out() -> String {
    page("Signed out", "<p>You have been signed out.</p>")
}

pub fn error(title: &str, detail: &str) -> String {
    page(title, &format!("<p>{}</p>", escape(detail)))
}
