"""`python -m pobatch.core.demo_portal [--scenario FILE] [--port N] [--host H] [--markup coupa|variant] [--revision N]`.

Serve the demo portal until Ctrl+C."""
from __future__ import annotations

import argparse
import logging
import sys

from pobatch.core.demo_portal.server import main


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m pobatch.core.demo_portal", description=__doc__)
    parser.add_argument("--scenario", help="scenario JSON file (default: the bundled sample)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--markup", choices=["coupa", "variant"], help="draw the pages with this markup "
                        "(default: the scenario's)")
    parser.add_argument("--revision", type=int, help="serve the scenario after its first N revisions "
                        "(default 0: as written); POST /__demo__/revise?to=N changes it while serving")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    main(args.scenario, args.port, args.host, markup=args.markup, revision=args.revision)


if __name__ == "__main__":
    cli()
