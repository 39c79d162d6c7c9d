"""`pobatch check` against the demo portal in real headless Chromium."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pobatch.core.cli import main
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.commands.login import prepare_demo_profile
from tests.conftest import CHROMEDRIVER, CHROMIUM


@pytest.fixture(scope="module")
def portal(browser_available_module):
    with DemoPortal().start() as p:
        yield p


@pytest.fixture(scope="module")
def profile(portal: DemoPortal, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_demo_profile(tmp_path_factory.mktemp("check") / "profile", portal.base_url, timeout=60)


def check(portal: DemoPortal, profile: Path, tmp_path: Path, *args: str):
    snap = tmp_path / "snap.json"
    result = CliRunner().invoke(main, ["check", "--site", "demo", "--base-url", portal.base_url, "--headless",
                                       "--profile", str(profile), "--browser", "chromium", "--driver", CHROMEDRIVER,
                                       "--browser-binary", CHROMIUM, "--snapshot", str(snap), *args])
    return result, snap


def test_check_prints_the_evidence_and_returns_0_on_the_demo_portal(portal: DemoPortal, profile: Path,
                                                                    tmp_path: Path) -> None:
    before = dict(portal.download_counts())
    result, snap = check(portal, profile, tmp_path, "100001", "PO100007", "100012")
    out = result.output
    assert result.exit_code == 0, out
    assert "HTTP 200" in out and "number in h1" in out and "marker .orderHeaderShowFloatingSection" in out
    assert "Acme Office Supplies" in out  # the supplier
    assert "Invoice 2024-001.pdf  [link]  matched a[href*='attachment']" in out
    assert "[js]  matched span[aria-label*='file attachment']" in out
    assert "NOT_FOUND" in out and "HTTP 404" in out and "Oops! We couldn't find what you wanted" in out
    assert "Verdict: all 3 PO(s) understood" in out
    assert portal.download_counts() == before  # looking downloads nothing
    data = json.loads(snap.read_text(encoding="utf-8"))
    assert [p["po_number"] for p in data["pos"]] == ["100001", "100007", "100012"]
    assert all(p["understood"] for p in data["pos"]) and "<html" in data["pos"][0]["html"].lower()


def test_a_site_file_that_breaks_the_attachment_selectors_is_told_apart(portal: DemoPortal, profile: Path,
                                                                       tmp_path: Path) -> None:
    site = tmp_path / "broken.toml"
    site.write_text('extends = "coupa"\nname = "broken"\n[attachments]\nselectors = ["a.no-such-attachment"]\n',
                    encoding="utf-8")
    result, snap = check(portal, profile, tmp_path, "--site-file", str(site), "100001")
    out = result.output
    assert result.exit_code == 1, out
    assert "attachments  0" in out
    assert "file-like names that no attachment selector matched" in out and "Invoice 2024-001.pdf" in out
    assert "[attachments] selectors" in out and "Verdict: 1 of 1 PO(s) not understood (100001)" in out
    assert json.loads(snap.read_text(encoding="utf-8"))["pos"][0]["understood"] is False


def test_a_selector_the_browser_rejects_stops_with_the_key_and_line(portal: DemoPortal, profile: Path,
                                                                    tmp_path: Path) -> None:
    site = tmp_path / "bad.toml"
    site.write_text('extends = "coupa"\n[supplier]\nselectors = [\n  "span[data-supplier-name]",\n'
                    '  "span:no-such-pseudo-class",\n]\n', encoding="utf-8")
    result, _ = check(portal, profile, tmp_path, "--site-file", str(site), "100001")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: site file") and "line 5" in line and "supplier.selectors" in line
    assert "span:no-such-pseudo-class" in line and "rejects" in line


def test_check_needs_a_po_number(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--site", "demo", "--base-url", "http://127.0.0.1:9", "abc!"])
    assert result.exit_code == 2 and "expected a PO number" in result.output


@pytest.mark.parametrize("mode", [["--sequential"], ["--parallel", "--workers", "2"]], ids=["sequential", "parallel"])
def test_a_selector_the_browser_rejects_stops_a_run_in_every_mode(portal: DemoPortal, profile: Path, tmp_path: Path,
                                                                  mode: list[str]) -> None:
    site = tmp_path / "bad.toml"
    site.write_text('extends = "coupa"\n[supplier]\nselectors = ["span:no-such-pseudo-class"]\n', encoding="utf-8")
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n100001\n100002\n100003\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(orders), "--site", "demo", "--base-url", portal.base_url,
                                       "--profile", str(profile), "--browser", "chromium", "--driver", CHROMEDRIVER,
                                       "--browser-binary", CHROMIUM, "--site-file", str(site),
                                       "--out", str(tmp_path / "out"), *mode])
    assert result.exit_code == 2, result.output
    assert "line 3: supplier.selectors" in result.output and "rejects" in result.output
    # no PO got an answer from a definition the browser could not even read
    assert not [p for p in (tmp_path / "out").glob("*/1000*") if p.is_dir()]
