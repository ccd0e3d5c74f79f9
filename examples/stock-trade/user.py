"""The user's side of account linking, scripted: what a browser does when
the user opens the `connect_url` the gateway handed to the agent.

    vault  GET /connect/stocktrade?ticket=…   → 200, a page: link your stocktrade
                                                account to the agentward user alice?
    vault  POST /connect/stocktrade           Continue (the page's form) → 303 to the broker's /auth
    broker GET /auth?…                        → 303 to its login page
    broker POST /interaction/…/login          the user signs in
    broker POST /interaction/…/confirm        the user allows the vault's access
    broker                                    → 303 back to the vault's /connect/callback
    vault  GET /connect/callback?code=…       the vault redeems the code: linked

A library (the demo's agent and the end-to-end tests use `link_account`) and
a CLI:

    python user.py link 'http://127.0.0.1:8787/connect/stocktrade?ticket=…' --login alice --password demo
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from dataclasses import dataclass, field

import requests


@dataclass
class Linking:
    """What happened: every hop (method, URL without query, status) and the
    vault's final answer."""

    hops: list[tuple[str, str, int]] = field(default_factory=list)
    response: requests.Response | None = None
    # The question the vault's confirmation page asked (its heading).
    question: str | None = None

    @property
    def linked(self) -> bool:
        return self.response is not None and self.response.status_code == 200


def _record(linking: Linking, r: requests.Response) -> None:
    for hop in [*r.history, r]:
        linking.hops.append((hop.request.method, hop.url.split("?", 1)[0], hop.status_code))


def _form_action(html: str, step: str) -> str:
    found = re.search(r'<form method="post" action="([^"]*/' + step + r')"', html)
    if not found:
        raise RuntimeError(f"the broker's page has no `{step}` form")
    return found.group(1)


def _confirm(browser: requests.Session, page: requests.Response, linking: Linking, timeout: float) -> requests.Response:
    """The vault's confirmation page: notes the question it asks, then
    submits its form with Continue."""
    heading = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
    linking.question = html.unescape(re.sub(r"<[^>]+>", "", heading.group(1))).strip() if heading else None
    form = re.search(r'<form method="post" action="([^"]*)"', page.text)
    if not form:
        raise RuntimeError("the vault's page has no form")
    fields = {
        name: html.unescape(re.search(rf'name="{name}" value="([^"]*)"', page.text).group(1))
        for name in ("ticket", "csrf_token")
    }
    fields["decision"] = "allow"
    return browser.post(html.unescape(form.group(1)), data=fields, timeout=timeout)


def link_account(connect_url: str, login: str, password: str = "demo", allow: bool = True, timeout: float = 15) -> Linking:
    """Follows `connect_url` like a browser: continues on the vault's
    confirmation page, signs in to the broker as `login`, allows (or denies)
    access at the broker, and returns where it ended."""
    browser = requests.Session()
    linking = Linking()
    r = browser.get(connect_url, timeout=timeout)
    _record(linking, r)
    if r.status_code == 200 and "/connect/" in r.url and 'name="csrf_token"' in r.text:
        r = _confirm(browser, r, linking, timeout)
        _record(linking, r)
    if r.status_code != 200 or "/interaction/" not in r.url:
        linking.response = r
        return linking
    base = r.url.split("/interaction/", 1)[0]
    r = browser.post(base + _form_action(r.text, "login"), data={"login": login, "password": password}, timeout=timeout)
    _record(linking, r)
    if r.status_code == 200 and "/interaction/" in r.url:
        # The consent page (a provider may skip it for a grant it already has).
        r = browser.post(base + _form_action(r.text, "confirm" if allow else "abort"), timeout=timeout)
        _record(linking, r)
    linking.response = r
    return linking


def approval_link(vault_log: str, message: str, seen: set[str], timeout: float = 20) -> str:
    """The approval link the vault sent the user for `message` (the demo's
    vault has no webhook: its log notifier is "alice's phone"), one not in
    `seen`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(vault_log, errors="replace") as log:
            for line in log:
                if "log notifier" in line and message in line:
                    m = re.search(r"approval_url=(\S+)", line)
                    if m and m.group(1) not in seen:
                        seen.add(m.group(1))
                        return m.group(1).strip('"')
        time.sleep(0.1)
    raise requests.RequestException(f"the vault sent no approval link for {message!r}")


def decide_approval(link: str, decision: str, timeout: float = 15) -> tuple[str, requests.Response]:
    """What the user's browser does with an approval link: opens the page
    (which decides nothing), reads it, and posts its form with `decision`
    (`approve` or `deny`). Returns the page's message and the vault's answer."""
    browser = requests.Session()
    page = browser.get(link, timeout=timeout)
    page.raise_for_status()
    message = re.search(r'id="binding-message">([^<]*)<', page.text)
    form = {name: html.unescape(value) for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text)}
    action = html.unescape(_form_action(page.text, "approve"))
    answer = browser.post(requests.compat.urljoin(link, action), data=dict(form, decision=decision), timeout=timeout)
    return html.unescape(message.group(1)) if message else "", answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    link = sub.add_parser("link", help="follow a connect_url, sign in and allow")
    link.add_argument("connect_url")
    link.add_argument("--login", required=True)
    link.add_argument("--password", default="demo")
    link.add_argument("--deny", action="store_true")
    args = parser.parse_args()
    linking = link_account(args.connect_url, args.login, args.password, allow=not args.deny)
    for method, url, status in linking.hops:
        print(f"{method:4} {url} → {status}")
    return 0 if linking.linked else 1


if __name__ == "__main__":
    sys.exit(main())
