"""The demo portal's new shapes in real headless Chromium: what only a browser can show.

Two tests, one browser each: a list drawn by script after a delay (its timing comes from the page's
own Resource Timing, not from the test's clock), and the variant markup queried with the built-in
Coupa selectors (none may match) and with data/variant_site.toml's (each must).
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pobatch.core.demo_portal import DemoPortal, unfamiliar_scenario_path, variant_scenario_path, variant_site_path
from pobatch.core.demo_portal.scenario import ALL_KINDS
from pobatch.core.sites.demo import DEMO_EMAIL, DEMO_PASSWORD
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from eventually import wait_for

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]

# The built-in Coupa definition as SITE_SCHEMA.md lists it (issue 13). When core/sites/coupa.toml
# exists, its lists are added: whatever the built-in definition relies on, the variant must fail.
BUILTIN: dict[str, list[str]] = {
    "login": ["#user_email", "#user_password", "form#new_session"],
    "po_number": ["h1", "[data-po-number]", ".po_number"],
    "po_markers": [".orderHeaderShowFloatingSection", "[data-po-number]"],
    "requisition_number": ["h1"],
    "supplier": ["span[data-supplier-name]", "[class*='supplier-name']", ".supplier-info span"],
    "attachments": ["a[href*='attachment']", "a[href*='attachment_file']", "a[download]",
                    "span[aria-label*='file attachment']", "[role='button'][aria-label*='attachment']"]
                   + [f"span[title*='.{ext}' i]" for ext in ("pdf", "docx", "doc", "msg", "eml", "xlsx", "xls", "csv",
                                                            "zip", "txt", "png", "jpg", "tif")],
    "area": ["#attachments", "[data-attachments]", ".attachments_section"],
    "loading": [".spinner", ".loading", "[aria-busy='true']"],
    "requisition_link": ["a[href*='/requisition_headers/']"],
    "error_selectors": ["div.flash_error", "div#error_explanation"],
}
BUILTIN_TEXTS = ["Oops! We couldn't find what you wanted", "The page you were looking for doesn't exist",
                 "You are not authorized", "Access denied", "We're sorry, but something went wrong"]
_TOML_KEYS = {("login", "selectors"): "login", ("identity", "po_number_selectors"): "po_number",
              ("identity", "po_markers"): "po_markers",
              ("identity", "requisition_number_selectors"): "requisition_number",
              ("identity", "requisition_markers"): "po_markers", ("supplier", "selectors"): "supplier",
              ("attachments", "selectors"): "attachments", ("attachments", "area"): "area",
              ("attachments", "loading"): "loading", ("attachments", "loaded"): "loading",
              ("errors", "error_selectors"): "error_selectors"}


def builtin_definition() -> tuple[dict[str, list[str]], list[str]]:
    selectors = {k: list(v) for k, v in BUILTIN.items()}
    texts = list(BUILTIN_TEXTS)
    coupa = REPO / "core" / "sites" / "coupa.toml"
    if coupa.exists():
        data = tomllib.loads(coupa.read_text(encoding="utf-8"))
        for (section, key), group in _TOML_KEYS.items():
            selectors[group] += [s for s in data.get(section, {}).get(key, []) if s not in selectors[group]]
        link = data.get("requisition", {}).get("link_selector")
        if link and link not in selectors["requisition_link"]:
            selectors["requisition_link"].append(link)
        for key in ("not_found_texts", "not_authorized_texts", "server_error_texts"):
            texts += [t for t in data.get("errors", {}).get(key, []) if t not in texts]
    return selectors, texts


COUNT_JS = "return arguments[0].map(function (s) { return document.querySelectorAll(s).length; });"
TEXTS_JS = ("return arguments[0].map(function (s) "
            "{ return Array.from(document.querySelectorAll(s), e => e.textContent); });")


def counts(driver: Any, selectors: list[str]) -> dict[str, int]:
    return dict(zip(selectors, driver.execute_script(COUNT_JS, selectors)))


def matching(driver: Any, selectors: list[str]) -> dict[str, int]:
    return {s: n for s, n in counts(driver, selectors).items() if n}


def texts_of(driver: Any, selectors: list[str]) -> list[str]:
    return [t for found in driver.execute_script(TEXTS_JS, selectors) for t in found]


def whole_token(value: str, texts: list[str]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", t) for t in texts)


def sign_in(driver: Any, portal: DemoPortal, email_sel: str, password_sel: str, form_sel: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(portal.base_url + "/sessions/new")
    driver.find_element(By.CSS_SELECTOR, email_sel).send_keys(DEMO_EMAIL)
    driver.find_element(By.CSS_SELECTOR, password_sel).send_keys(DEMO_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, form_sel).submit()
    WebDriverWait(driver, 30).until(lambda d: "/sessions" not in d.current_url)


# Recorded from the first byte of every document: what the attachment area held when the HTML was
# parsed, and when the first attachment item appeared (performance.now(), the page's own clock).
_WATCH_JS = """
window.__shape = {items_at: null, at_dcl: null};
document.addEventListener('DOMContentLoaded', function () {
  var area = document.getElementById('attachments');
  window.__shape.at_dcl = {area: !!area, spinner: !!(area && area.querySelector('.spinner')),
                           items: area ? area.querySelectorAll('li.attachment_item').length : -1,
                           text: area ? area.textContent.replace(/\\s+/g, ' ').trim() : '', t: performance.now()};
  new MutationObserver(function () {
    if (window.__shape.items_at === null && area.querySelector('li.attachment_item, p.empty')) {
      window.__shape.items_at = performance.now();
    }
  }).observe(area, {childList: true, subtree: true});
});
"""
_LIST_TIMING_JS = """
var e = performance.getEntriesByType('resource')
  .filter(function (r) { return r.name.indexOf('/attachments.json') >= 0; });
return e.length ? {start: e[0].startTime, end: e[0].responseEnd} : null;
"""


def test_a_delayed_list_appears_after_its_delay_and_downloads_the_real_bytes(browser_available: None,
                                                                             tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    spec = BrowserSpec(user_data_dir=str(tmp_path / "profile"), local_only=True, download_dir=str(downloads),
                       page_load_timeout=60)
    with DemoPortal(unfamiliar_scenario_path()).start() as portal, LocalBrowserSession(spec) as session:
        d = session.driver
        sign_in(d, portal, "#user_email", "#user_password", "form#new_session")
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _WATCH_JS})
        delay_s = portal.scenario.po("300001").attachments_delay_ms / 1000
        selectors, _ = builtin_definition()
        for po_id, spinner, n in (("300001", True, 3), ("300002", False, 3), ("300003", True, 0),
                                  ("300004", False, 0)):
            d.get(portal.po_url(po_id))
            wait_for(lambda: d.execute_script("return window.__shape.items_at"), 30, f"the list of {po_id}")
            shape = d.execute_script("return window.__shape")
            timing = d.execute_script(_LIST_TIMING_JS)
            # when the HTML was parsed: the area, its spinner or nothing, no list and no "No attachments"
            assert shape["at_dcl"]["area"] and shape["at_dcl"]["items"] == 0, po_id
            assert shape["at_dcl"]["spinner"] is spinner, po_id
            assert shape["at_dcl"]["text"] == ("Attachments Loading…" if spinner else "Attachments"), po_id
            # the list came from the JSON endpoint, which answered after the delay, and was drawn then
            assert timing and timing["end"] - timing["start"] >= delay_s * 1000 - 50, (po_id, timing)
            assert shape["items_at"] >= timing["end"] - 1, (po_id, shape, timing)
            assert not d.execute_script("return document.querySelector('#attachments .spinner')"), po_id
            drawn = matching(d, selectors["attachments"])
            if n:
                kinds = {e.spec.kind for e in portal.scenario.entries(po_id)}
                items = d.execute_script("return document.querySelectorAll('#attachments li.attachment_item').length")
                assert items == n
                assert drawn, po_id  # the drawn elements are Coupa's: the built-in selectors find them
                assert kinds <= set(ALL_KINDS)
            else:
                assert drawn == {} and d.execute_script(
                    "return document.querySelector('#attachments p.empty').textContent") == "No attachments"
            assert portal.page_hits(po_id) == 1 and portal.attachment_list_hits(po_id) == 1
        # a JS attachment drawn by script still downloads the PO's file (delegated click handler)
        d.get(portal.po_url("300001"))
        wait_for(lambda: d.execute_script("return window.__shape.items_at"), 30, "the list of 300001 again")
        target = d.execute_script("return document.querySelector('#attachments [data-token]')")
        d.execute_script("arguments[0].click();", target)
        expected = portal.expected_files("300001")["Delayed delivery note.docx"]
        saved = downloads / "Delayed delivery note.docx"
        wait_for(lambda: saved.exists() and saved.stat().st_size == len(expected), 60, "the download")
        assert saved.read_bytes() == expected


def test_the_variant_matches_none_of_the_builtin_selectors_and_all_of_its_site_file(browser_available: None,
                                                                                  tmp_path: Path) -> None:
    site = tomllib.loads(variant_site_path().read_text(encoding="utf-8"))
    builtin, builtin_texts = builtin_definition()
    every_builtin = sorted({s for group in builtin.values() for s in group})
    spec = BrowserSpec(user_data_dir=str(tmp_path / "profile"), local_only=True, page_load_timeout=60)
    with DemoPortal(variant_scenario_path()).start() as portal, LocalBrowserSession(spec) as session:
        d = session.driver
        d.get(portal.base_url + "/sessions/new")
        assert matching(d, every_builtin) == {}
        assert all(counts(d, site["login"]["selectors"]).values())
        email, password, form = site["login"]["selectors"]
        sign_in(d, portal, email, password, form)

        def body_text() -> str:
            return d.execute_script("return document.body.innerText")

        def assert_builtin_blind() -> None:
            assert matching(d, every_builtin) == {}, d.current_url
            assert [t for t in builtin_texts if t.lower() in body_text().lower()] == [], d.current_url

        for po_id in ("100001", "100002", "100003", "100005", "100006", "100012"):
            po = portal.scenario.po(po_id)
            d.get(portal.po_url(po_id))
            assert_builtin_blind()
            assert whole_token(po_id, texts_of(d, site["identity"]["po_number_selectors"]))
            assert all(counts(d, site["identity"]["po_markers"]).values())
            assert po.supplier in texts_of(d, site["supplier"]["selectors"])
            assert all(counts(d, site["attachments"]["area"]).values())
            found = d.execute_script("return document.querySelectorAll(arguments[0]).length",
                                     ", ".join(site["attachments"]["selectors"]))
            assert found == len(portal.scenario.entries(po_id)), po_id
            assert counts(d, site["attachments"]["loading"]) == {s: 0 for s in site["attachments"]["loading"]}
            link = counts(d, [site["requisition"]["link_selector"]])[site["requisition"]["link_selector"]]
            assert link == (1 if po.requisition else 0), po_id
        d.get(portal.base_url + "/requisitions/5005")
        assert_builtin_blind()
        assert whole_token("5005", texts_of(d, site["identity"]["requisition_number_selectors"]))
        assert all(counts(d, site["identity"]["requisition_markers"]).values())
        assert not any(counts(d, site["identity"]["po_markers"]).values())  # a requisition is not a PO page
        d.get(portal.base_url + "/")
        assert_builtin_blind()
        assert not any(counts(d, site["identity"]["po_markers"]).values())
        for po_id, key in (("100007", "not_found_texts"), ("100011", "not_authorized_texts"),
                           ("100010", "server_error_texts")):
            d.get(portal.po_url(po_id))
            assert_builtin_blind()
            assert all(counts(d, site["errors"]["error_selectors"]).values()), po_id
            assert all(t in body_text() for t in site["errors"][key]), po_id
            assert not any(counts(d, site["identity"]["po_markers"]).values())

        # the same session on Coupa's markup: the queries above are not blind, the built-in ones match
        portal.markup = "coupa"
        d.get(portal.po_url("100001"))
        assert whole_token("100001", texts_of(d, builtin["po_number"]))
        assert matching(d, builtin["po_markers"]) and matching(d, builtin["area"]) and matching(d, builtin["supplier"])
        assert matching(d, builtin["attachments"]) and matching(d, builtin["requisition_link"])
        variant_selectors = sorted({s for section, key in _TOML_KEYS for s in site.get(section, {}).get(key, [])}
                                   | {site["requisition"]["link_selector"]})
        assert len(variant_selectors) >= 14  # every selector the variant's site file holds
        assert matching(d, variant_selectors) == {}


def test_the_sso_interstitial_leaves_the_portals_host(browser_available: None, tmp_path: Path) -> None:
    """The redirect really takes a browser to another host. Chromium applies --host-resolver-rules to IP
    literals too, so a local-only browser needs the identity provider's address excluded as well."""
    from pobatch.core.demo_portal import Scenario

    sc = Scenario.from_dict({"seed": 1, "pos": [{"id": "1", "faults": {"page": ["sso_interstitial", "ok"]},
                                                 "attachments": [{"name": "a.pdf"}]}]})
    with DemoPortal(sc).start() as portal:
        rules = f"MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE {portal.sso_host}"
        spec = BrowserSpec(user_data_dir=str(tmp_path / "profile"), local_only=True, page_load_timeout=60,
                           extra_args=(f"--host-resolver-rules={rules}",))
        with LocalBrowserSession(spec) as session:
            d = session.driver
            sign_in(d, portal, "#user_email", "#user_password", "form#new_session")
            d.get(portal.po_url("1"))
            assert d.current_url.startswith(portal.sso_base_url + "/idp/authorize?")
            assert d.execute_script("return location.hostname") == portal.sso_host != "127.0.0.1"
            assert d.execute_script("return document.getElementById('idp-continue').textContent") == \
                "Continue to sign in"
            builtin, texts = builtin_definition()
            assert matching(d, sorted({s for group in builtin.values() for s in group})) == {}
            assert portal.sso_hits() == 1 and portal.page_hits("1") == 1
            d.get(portal.po_url("1"))  # the fault list goes on: the PO's own page, on the portal's host
            assert d.execute_script("return location.host") == f"127.0.0.1:{portal.port}"
            assert "Purchase Order #1" in d.title
