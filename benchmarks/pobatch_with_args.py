"""`python -m benchmarks.pobatch_with_args run ...`: the `pobatch` command, with extra browser arguments.

For benchmarks only (benchmarks/cpu_per_po.py's `--variants`): the product has no option that adds
browser arguments, and should not grow one just to be measured. This runs pobatch's own CLI after
wrapping the BrowserSpec that `pobatch run` builds (core/preparation/planner.py), so every browser of the
run, in this process (sequential) or in a spawned worker (the spec is pickled with its arguments), starts with
pobatch's own flags plus the JSON list in POBATCH_BENCH_BROWSER_ARGS. corelib/browser/factory.py merges a
`--disable-features=` here with its own, so a candidate adds to BASE_ARGS' list instead of replacing it.
"""
from __future__ import annotations

import json
import os
from typing import Any

ENV = "POBATCH_BENCH_BROWSER_ARGS"


def install(extra: tuple[str, ...]) -> None:
    from pobatch.core.preparation import planner

    real = planner.BrowserSpec

    def spec_with_extra_args(*args: Any, **kwargs: Any):
        spec = real(*args, **kwargs)
        spec.extra_args = tuple(spec.extra_args) + tuple(a for a in extra if a not in spec.extra_args)
        return spec

    planner.BrowserSpec = spec_with_extra_args  # type: ignore[assignment]


def main() -> None:
    extra = tuple(json.loads(os.environ.get(ENV) or "[]"))
    if extra:
        install(extra)
    from pobatch.core.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
