#!/usr/bin/env python3
"""Signs in to an OIDC-protected URL like a browser, against load/oidc-idp.mjs (its development
login form), and prints the cookies the protected site set, as one Cookie header value.

    python3 load/oidc-signin.py --url http://127.0.0.1:8080/ --user alice

Used by load/compare for Apache + mod_auth_openidc, and for Vallum sessions whose user belongs to
many groups (`--ip` and `--cookies-for`): the session under load is a real one.
"""
import argparse
import html.parser
import http.cookiejar
import sys
import urllib.parse
import urllib.request

from localhost import resolve_localhost_to


class Form(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--user", default="alice")
    p.add_argument("--ip", help="where *.localhost names resolve (a Vallum gateway)")
    p.add_argument("--cookies-for", help="keep this host's cookies (default: mod_auth_openidc's)")
    args = p.parse_args()
    if args.ip:
        resolve_localhost_to(args.ip)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    # mod_auth_openidc answers 401 instead of redirecting to sign in unless it sees a browser.
    opener.addheaders = [("Accept", "text/html,application/xhtml+xml"), ("User-Agent", "Mozilla/5.0 (load/oidc-signin.py)")]
    r = opener.open(args.url, timeout=10)
    page = r.read().decode()
    form = Form()
    form.feed(page)
    if form.action is None:
        sys.exit(f"no login form at {r.geturl()}:\n{page[:500]}")
    form.fields.update({"login": args.user, "password": "any-password"})
    action = urllib.parse.urljoin(r.geturl(), form.action)
    r = opener.open(action, data=urllib.parse.urlencode(form.fields).encode(), timeout=10)
    r.read()
    if r.status != 200 or not r.geturl().startswith(args.url.rstrip("/")):
        sys.exit(f"sign-in ended at {r.geturl()} ({r.status})")
    site = urllib.parse.urlsplit(args.url)
    # The IdP shares the host (another port); keep only the protected site's session cookies.
    if args.cookies_for:
        cookies = [c for c in jar if c.domain.lstrip(".") == args.cookies_for]
    else:
        cookies = [c for c in jar if c.name.startswith("mod_auth_openidc")]
    if not cookies:
        sys.exit(f"no session cookie from {site.netloc}: {[c.name for c in jar]}")
    print("; ".join(f"{c.name}={c.value}" for c in cookies))


if __name__ == "__main__":
    main()
