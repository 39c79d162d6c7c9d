"""A soak scenario for the demo portal: `python -m benchmarks.soak_scenario --pos 2000 --seed 1 --out soak.json`.

A long run meets what a short one never does: a single sign-on refresh every 100 PO pages, pages whose
tracking pixel or chat widget never finishes, a connection reset in the middle of a file, a 429 now
and then, and a few POs with 50 files among many with one to five. This writes such a scenario
(issue 21), seeded, so two runs with the same arguments write the same file:

* files: about 1 PO in 200 has 50 files, the others 1 to 5 (about 3 per PO: some 6000 for 2000 POs);
  kinds mostly `link`, the other Coupa kinds mixed in; 2 to 30 KB each;
* single sign-on: the portal's session ends every 100 PO page requests; the identity provider sends the
  browser back by itself (`--sso-via`, "post_form" by default);
* 5% of the POs have a page sub-resource that never answers (one or two of image, async_script,
  iframe, longpoll);
* 2% of the files are cut off mid-way once (["drop_mid", "ok"]), 1% of the PO pages answer 429 once
  (["http429", "ok"], Retry-After 1 s);
* latency: pages 30-80 ms, files 10-40 ms.

`--no-faults` writes the same POs and files (same ids, names, kinds, sizes) without the SSO refresh,
the hanging sub-resources and the faults: the baseline to compare a soak run with. Every PO's truth is
derived by the scenario itself (core/demo_portal/scenario.py): with a bounce method all are
COMPLETED; with `--sso-via password_form` the PO that meets the first refresh is LOGIN_REQUIRED and the
rest PENDING.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

from pobatch.core.demo_portal.scenario import (
    HANG_KINDS,
    KINDS,
    SSO_VIA,
    AttachmentSpec,
    LatencySpec,
    PoSpec,
    Scenario,
    SessionOptions,
)

log = logging.getLogger("benchmarks.soak_scenario")

FIRST_ID = 500001
SSO_EVERY = 100
BIG_PO_SHARE, BIG_PO_FILES = 1 / 200, 50
_SMALL_COUNTS = (1, 2, 2, 3, 3, 4, 5)  # files of the other POs: 2.9 on average
HANG_SHARE, RESET_SHARE, TOO_MANY_SHARE = 0.05, 0.02, 0.01
PAGE_MS, FILE_MS = (30, 80), (10, 40)
FILE_SIZE = (2_000, 30_000)
_SUPPLIERS = ("Acme Office Supplies", "Globex Corporation", "Nordic Parts AB", "Initech Services",
              "Müller & Söhne: GmbH", "Umbrella Logistics")
_DOCS = (("Invoice", "pdf"), ("Delivery note", "pdf"), ("Quote", "docx"), ("Price list", "xlsx"),
         ("Order confirmation", "msg"), ("Supplier reply", "eml"), ("Certificate", "pdf"))
# Mostly links, as on a real tenant; the other kinds mixed in.
_KIND_WEIGHTS = {"link": 60, "download_attr": 10, "js": 8, "span": 8, "popup": 7, "inline_pdf": 7}


def soak_scenario(pos: int, seed: int, faults: bool = True, sso_via: str = "post_form",
                  sso_every: int = SSO_EVERY) -> Scenario:
    """The scenario; every random draw is made whether or not `faults` is set, so that the POs and
    files of the two variants are the same."""
    if pos < 1:
        raise ValueError("soak_scenario: pos must be at least 1")
    if sso_via not in SSO_VIA:
        raise ValueError(f"soak_scenario: sso_via must be one of {list(SSO_VIA)}")
    assert tuple(_KIND_WEIGHTS) == KINDS
    rng = random.Random(f"soak|{seed}")
    specs = []
    for n in range(pos):
        po_id = str(FIRST_ID + n)
        count = BIG_PO_FILES if rng.random() < BIG_PO_SHARE else rng.choice(_SMALL_COUNTS)
        atts = []
        for i in range(count):
            kind = rng.choices(KINDS, weights=list(_KIND_WEIGHTS.values()))[0]
            stem, ext = rng.choice(_DOCS)
            if kind == "inline_pdf":
                ext = "pdf"
            size = rng.randint(*FILE_SIZE)
            reset = rng.random() < RESET_SHARE
            atts.append(AttachmentSpec(f"{stem} {po_id}-{i + 1}.{ext}", kind, size,
                                       ("drop_mid", "ok") if reset and faults else ()))
        hang_draw = rng.random() < HANG_SHARE
        hang = tuple(rng.sample(HANG_KINDS, rng.choice((1, 1, 2))))
        too_many = rng.random() < TOO_MANY_SHARE
        specs.append(PoSpec(id=po_id, supplier=_SUPPLIERS[n % len(_SUPPLIERS)], attachments=tuple(atts),
                            page_faults=("http429", "ok") if too_many and faults else (),
                            hang=hang if hang_draw and faults else ()))
    session = SessionOptions(sso_refresh_every=sso_every, sso_via=sso_via) if faults else SessionOptions()
    return Scenario(seed=seed, pos=tuple(specs), latency=LatencySpec(PAGE_MS, FILE_MS), session=session,
                    name=f"soak-{pos}-{seed}" + ("" if faults else "-no-faults"),
                    description=("Soak (benchmarks/soak_scenario.py): SSO refresh every 100 PO pages, hanging "
                                 "sub-resources, mid-file resets, 429s" if faults else
                                 "Soak (benchmarks/soak_scenario.py) without faults: the same POs and files"))


def summary(scenario: Scenario) -> dict[str, object]:
    """What the scenario holds, in numbers (logged by the command, checked by its test)."""
    files = [a for po in scenario.pos for a in po.attachments]
    return {
        "pos": len(scenario.pos),
        "files": len(files),
        "pos_with_50_files": sum(len(po.attachments) >= BIG_PO_FILES for po in scenario.pos),
        "resets": sum(bool(a.faults) for a in files),
        "http429_pages": sum(bool(po.page_faults) for po in scenario.pos),
        "hanging_pages": sum(bool(po.hang) for po in scenario.pos),
        "sso_refresh_every": scenario.session.sso_refresh_every,
        "sso_via": scenario.session.sso_via if scenario.session.sso_refresh_every else None,
        "outcomes": sorted({f"{s} {r}".strip() for s, r in scenario.expected_outcomes().values()}),
    }


def write(scenario: Scenario, out: Path) -> None:
    out.write_text(json.dumps(scenario.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_scenario", description=__doc__.splitlines()[0])
    parser.add_argument("--pos", type=int, default=2000, help="number of POs (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="the scenario JSON to write")
    parser.add_argument("--no-faults", action="store_true",
                        help="the same POs and files without SSO refresh, hanging sub-resources and faults")
    parser.add_argument("--sso-via", choices=SSO_VIA, default="post_form",
                        help="how the identity provider sends the browser back (default post_form)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pos < 1:
        parser.error("--pos must be at least 1")
    scenario = soak_scenario(args.pos, args.seed, faults=not args.no_faults, sso_via=args.sso_via)
    write(scenario, args.out)
    log.info("wrote %s: %s", args.out, json.dumps(summary(scenario), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
