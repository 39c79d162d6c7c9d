"""Site files: the built-in definition is one, a user's extends or replaces it, mistakes name key and line."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pobatch.core.sites import COUPA, get_site, resolve_site
from pobatch.core.sites.site_file import SiteFileError, load_site_file, parse_site_text, selector_problem
from pobatch.corelib.errors import FatalError
from pobatch.corelib.safe_paths import name_from_page
from pobatch.corelib.throttle import SharedThrottle, parse_retry_after


def parse(text: str):
    return parse_site_text(text, "my_tenant.toml", builtins=get_site)


def test_the_builtin_coupa_definition_is_a_site_file() -> None:
    assert Path(COUPA.source).name == "coupa.toml"
    assert COUPA.po_path == "/order_headers/{id}"
    # h1 alone is never evidence: a marker is required too
    assert "h1" in COUPA.po_number_selectors and COUPA.po_markers
    assert "#attachments" in COUPA.attachment_area_selectors


def test_extends_replaces_a_list_or_adds_to_it() -> None:
    site = parse('extends = "coupa"\nname = "acme"\n[attachments]\nselectors = ["a.file"]\n'
                 'area = { add = ["#docs"] }\n[errors]\nnot_found_texts = { add = ["Nicht gefunden"] }\n')
    assert site.name == "acme"
    assert site.attachment_selectors == ("a.file",)
    assert site.attachment_area_selectors == COUPA.attachment_area_selectors + ("#docs",)
    assert site.not_found_texts[-1] == "Nicht gefunden" and site.not_found_texts[:-1] == COUPA.not_found_texts
    # everything not named stays the built-in's
    assert site.po_markers == COUPA.po_markers and site.supplier_selectors == COUPA.supplier_selectors


def test_a_retired_key_is_named_once_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """overlay_selectors once described floating bars; clicks inside the page made it pointless. A site
    file copied from an older coupa.toml must still run, and be told which line to remove."""
    text = 'extends = "coupa"\n[errors]\noverlay_selectors = [".floating"]\n'
    with caplog.at_level("WARNING", logger="pobatch.core.sites.site_file"):
        site = parse_site_text(text, "old.toml", get_site)
    assert site == dataclasses.replace(COUPA, source="old.toml")
    assert [r.getMessage() for r in caplog.records] == [
        "site file old.toml, line 3: errors.overlay_selectors: no longer used (attachments are clicked inside "
        "the page, which no floating bar can cover); remove the line"]


def test_a_portal_from_scratch_needs_its_identity_and_attachments() -> None:
    text = ('name = "other"\n[urls]\npo_path = "/po/{id}"\n[identity]\npo_number_selectors = [".po-no"]\n'
            'po_markers = [".po-page"]\n[attachments]\nselectors = ["a.att"]\narea = ["#files"]\n')
    site = parse(text)
    assert (site.po_path, site.po_markers, site.requisition_path, site.not_found_texts) == ("/po/{id}", (".po-page",), "", ())
    with pytest.raises(SiteFileError, match=r"must set .*attachments\.area"):
        parse(text.replace('area = ["#files"]\n', ""))


@pytest.mark.parametrize("text, line, key, expected", [
    ('extends = "coupa"\n\n[attachments]\nselector = ["a"]\n', 4, "attachments.selector", "unknown key"),
    ('extends = "coupa"\n[identity]\npo_markers = "x"\n', 3, "identity.po_markers", "list of non-empty strings"),
    ('extends = "coupa"\n[attachments]\nquiet_ms = "fast"\n', 3, "attachments.quiet_ms", "whole number"),
    ('extends = "coupa"\n[attachments]\nselectors = [\n  "a.ok",\n  "a[href*=\'x\'",\n]\n', 5,
     "attachments.selectors", "missing ']'"),
    ('extends = "coupa"\n[urls]\npo_path = "/orders/"\n', 3, "urls.po_path", "{id}"),
    ('extends = "nosuch"\n', 1, "extends", "not a built-in site"),
    ('extends = "coupa"\n[colours]\nx = 1\n', 2, "colours", "unknown key or section"),
])
def test_mistakes_name_the_file_key_and_line(text: str, line: int, key: str, expected: str) -> None:
    with pytest.raises(SiteFileError) as err:
        parse(text)
    msg = str(err.value)
    assert msg.startswith("site file my_tenant.toml") and f"{key}:" in msg and expected in msg
    if line:
        assert f"line {line}:" in msg


def test_not_toml_at_all_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[attachments\nselectors = 1\n", encoding="utf-8")
    with pytest.raises(SiteFileError, match="not valid TOML") as err:
        load_site_file(bad)
    assert "\n" not in str(err.value)


def test_resolve_site_turns_a_bad_file_into_a_fatal_configuration_error(tmp_path: Path) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text('extends = "coupa"\n[supplier]\nselectors = [""]\n', encoding="utf-8")
    with pytest.raises(FatalError, match="supplier.selectors"):
        resolve_site("demo", bad)
    good = tmp_path / "g.toml"
    good.write_text('extends = "coupa"\nname = "t"\n', encoding="utf-8")
    # the demo's address survives a file that extends the definition
    assert resolve_site("demo", good).default_base_url == get_site("demo").default_base_url


@pytest.mark.parametrize("selector, ok", [
    ("a[href*='attachment']", True), ("span[title*='.pdf' i]", True), ("a:not(.x) > b", True),
    ("a[href", False), ("a)", False), ("> a", False), ("a,,b", False), ("a[title='x]", False),
])
def test_selector_shape_check(selector: str, ok: bool) -> None:
    assert (selector_problem(selector) == "") is ok


@pytest.mark.parametrize("served, label, url, expected", [
    # no Content-Disposition: the browser named it after the URL; the page's label wins
    ("attachment_file.pdf", "contract.pdf", "/attachments/tok/attachment_file", "contract.pdf"),
    ("download.pdf", "Offer 7.pdf", "/files?id=7", "Offer 7.pdf"),
    ("raw.pdf", "Terms.pdf", "http://h/attachments/x/raw", "Terms.pdf"),
    # a name the server chose stands
    ("Invoice 2024-001.pdf", "Invoice 2024-001.pdf", "/attachment_files/abc", "Invoice 2024-001.pdf"),
    ("server-name.pdf", "contract.pdf", "/attachment_files/abc", "server-name.pdf"),
    # a label without an extension is not a file name
    ("attachment_file.pdf", "Download", "/attachments/tok/attachment_file", "attachment_file.pdf"),
    ("attachment_file.pdf", "contract.pdf", "", "attachment_file.pdf"),
])
def test_names_come_from_the_page_when_the_server_gave_none(served: str, label: str, url: str, expected: str) -> None:
    assert name_from_page(served, label, url) == expected


def test_the_shared_throttle_holds_every_reader_and_never_shortens(tmp_path: Path) -> None:
    now = [1000.0]
    slept: list[float] = []
    a = SharedThrottle(tmp_path / "throttle", clock=lambda: now[0], sleep=slept.append)
    b = SharedThrottle(tmp_path / "throttle", clock=lambda: now[0], sleep=slept.append)
    assert b.wait() == 0.0
    a.hold(30)
    a.hold(5)  # a shorter pause asked later does not cut the first one short
    assert b.wait() == pytest.approx(30)
    now[0] += 31
    assert b.wait() == 0.0 and slept == [pytest.approx(30)]


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_definitions_are_frozen_and_picklable() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(COUPA)) == COUPA
    with pytest.raises(dataclasses.FrozenInstanceError):
        COUPA.name = "x"  # type: ignore[misc]


def test_the_readme_worked_example_is_a_valid_site_file() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("A worked example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    site = parse(block)
    assert site.name == "acme-tenant"
    assert site.po_number_selectors[-1] == "span.po-number" and site.attachment_selectors[-1] == "a.doc-link"
    assert site.loading_selectors == (".busy",) and site.empty_quiet_ms == 3000
    assert "Bestellung nicht gefunden" in site.not_found_texts


# -- "How to add a portal" (docs/design.md), step 2, followed literally -------------------------------
def test_a_new_built_in_portal_is_one_file_in_core_sites(tmp_path: Path) -> None:
    """Dropping `<name>.toml` beside coupa.toml makes a built-in portal of that name; the worked example
    is the demo portal's second markup, whose site file (the tenant route, step 1) the browser tests
    run (tests/test_portal_shapes_browser.py): as a built-in it is the same definition."""
    import shutil

    from pobatch.core.demo_portal import variant_site_path
    from pobatch.core.sites.builtin import BUILTIN_DIR, load_builtin_sites

    shutil.copy(BUILTIN_DIR / "coupa.toml", tmp_path / "coupa.toml")
    text = Path(variant_site_path()).read_text(encoding="utf-8").replace('name = "demo-variant"', 'name = "variant"')
    (tmp_path / "variant.toml").write_text(text, encoding="utf-8")
    sites = load_builtin_sites(tmp_path)
    assert sorted(sites) == ["coupa", "variant"]
    as_tenant_file = resolve_site("coupa", variant_site_path())
    assert dataclasses.replace(sites["variant"], source="") == dataclasses.replace(as_tenant_file, name="variant",
                                                                                  source="")
    assert sorted(load_builtin_sites()) == ["coupa"], "the product's own folder: Coupa (the demo is Coupa on this PC)"


@pytest.mark.parametrize("files, expected", [
    ({"acme.toml": 'extends = "coupa"\nname = "acme2"\n'}, "name = 'acme2'; expected 'acme'"),
    ({"acme.toml": 'extends = "nobody"\nname = "acme"\n'}, "acme.toml, line 1: extends: 'nobody' is not a built-in site"),
    ({"a.toml": 'extends = "b"\nname = "a"\n', "b.toml": 'extends = "a"\nname = "b"\n'}, "extends come back to 'a' (a -> b -> a)"),
])
def test_a_built_in_portal_file_that_cannot_be_read_says_which_and_why(tmp_path: Path, files: dict[str, str],
                                                                       expected: str) -> None:
    from pobatch.core.sites.builtin import BUILTIN_DIR, load_builtin_sites

    (tmp_path / "coupa.toml").write_bytes((BUILTIN_DIR / "coupa.toml").read_bytes())
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(SiteFileError, match=re.escape(expected)):
        load_builtin_sites(tmp_path)
