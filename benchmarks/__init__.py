"""Benchmarks of pobatch against the bundled demo portal: `python -m benchmarks.run [--quick]`.

Nothing in core/ or corelib/ imports from here. The naive baseline script lives here only, as the
yardstick a hand-written Selenium loop sets; it is not a mode of the product.
"""
