#!/usr/bin/env python3
"""Signs in through a running Vallum and its identity provider like a browser, and prints the
Cookie header value an authenticated request to the app needs.

The load scripts use it so sessions come from the real sign-in flow, never from forged cookies.
It understands Vallum's demo identity provider (a form per user) and plain-HTTP gateways.

    load/signin.py --url http://app.localhost:8000/ --ip 127.0.0.1 --user alice
"""
import argparse
import html.parser
import http.cookiejar
import sys
import urllib.parse
import urllib.request

from localhost import resolve_localhost_to


class Forms(html.parser.HTMLParser):
    """Collects each form's action and inputs."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="a protected app URL")
    p.add_argument("--ip", default="127.0.0.1", help="where *.localhost names resolve")
    p.add_argument("--user", default="alice", help="demo user to sign in as")
    args = p.parse_args()

    resolve_localhost_to(args.ip)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.addheaders = [("Accept", "text/html")]
    with opener.open(args.url, timeout=10) as r:
        page, at = r.read().decode(), r.geturl()
    forms = Forms()
    forms.feed(page)
    choice = [f for f in forms.forms if f["fields"].get("user") == args.user]
    if not choice:
        sys.exit(f"no sign-in form for user {args.user!r} at {at}:\n{page[:500]}")
    form = choice[0]
    data = urllib.parse.urlencode(form["fields"]).encode()
    with opener.open(urllib.parse.urljoin(at, form["action"]), data=data, timeout=10) as r:
        if r.status != 200:
            sys.exit(f"sign-in ended with {r.status} at {r.geturl()}")
    app_host = urllib.parse.urlsplit(args.url).hostname
    cookies = [f"{c.name}={c.value}" for c in jar if c.domain.lstrip(".") == app_host]
    if not cookies:
        sys.exit(f"no cookie for {app_host} after sign-in")
    print("; ".join(cookies))


if __name__ == "__main__":
    main()
