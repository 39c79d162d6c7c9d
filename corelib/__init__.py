"""pobatch engine: browsers, profiles, worker pool, downloads, run store.

Nothing in here knows what a purchase order is.
"""
