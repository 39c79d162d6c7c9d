"""What the evidence checks of a final answer cost per PO (issue 13): `python -m benchmarks.evidence_cost`.

On each PO page of a generated scenario, loaded once, it times in interleaved rounds:
- the page probe with what the page must prove (URL, number, marker, and the attachment area's
  settle state), as the workflow runs it;
- the same probe without an expectation (the text and status checks alone, no identity, no settle);
- the settle probe that confirms a counted list after the downloads (one more round trip per page).
The difference of the first two, plus the confirmation, is the added cost per page the checks
bring; a PO pays it once for its page (and once more for a requisition fallback page). The one
selector check per browser is spread over the whole run and left out.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pobatch.core.demo_portal import DemoPortal
from pobatch.core.demo_portal.scenario import generate_scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.sites import get_site
from pobatch.core.workflow.page_probes import PAGE_STATE_JS, SETTLE_JS, PageProbe, PageState
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.polling import Backoff


def _ms(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(pos: int, rounds: int, work: Path) -> dict[str, float]:
    site = get_site("demo")
    with DemoPortal(generate_scenario(pos, seed=13, page_ms=0, attachment_ms=0)).start() as portal:
        profile = prepare_demo_profile(work / "profile", portal.base_url, timeout=60)
        cfg = site.page_probe_config(portal.base_url)
        spec = BrowserSpec(browser="chromium", headless=True, user_data_dir=str(profile), local_only=True,
                           download_dir=str(work / "downloads"))
        with_id: list[float] = []
        without: list[float] = []
        settle: list[float] = []
        with LocalBrowserSession(spec) as session:
            driver = session.driver
            for po in portal.scenario.pos:
                expect = site.expectation("po", po.id, portal.base_url)
                driver.get(portal.po_url(po.id))
                backoff = Backoff(first=0.005)
                while PageProbe.of(driver.execute_script(PAGE_STATE_JS, cfg, expect)).state != PageState.READY:
                    backoff.sleep()
                for _ in range(rounds):  # interleaved: the machine's drift hits each alike
                    with_id += _ms(lambda: driver.execute_script(PAGE_STATE_JS, cfg, expect), 1)
                    without += _ms(lambda: driver.execute_script(PAGE_STATE_JS, cfg, None), 1)
                    settle += _ms(lambda: driver.execute_script(SETTLE_JS, cfg), 1)
    med = statistics.median
    return {"pages": pos, "rounds": rounds, "probe_with_evidence_ms": med(with_id),
            "probe_without_ms": med(without), "settle_ms": med(settle),
            "added_per_page_ms": med(with_id) - med(without) + med(settle)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pos", type=int, default=20, help="PO pages to load")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds per page")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pobatch-evidence-") as tmp:
        r = measure(args.pos, args.rounds, Path(tmp))
    print(f"| pages x rounds | probe with evidence | probe without | settle confirmation | added per page |\n"
          f"|---|---|---|---|---|\n"
          f"| {r['pages']} x {r['rounds']} | {r['probe_with_evidence_ms']:.2f} ms | {r['probe_without_ms']:.2f} ms "
          f"| {r['settle_ms']:.2f} ms | {r['added_per_page_ms']:.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
