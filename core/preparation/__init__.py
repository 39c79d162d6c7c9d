"""Everything a run is prepared from before a browser starts: the orders file, the base profile, the
preflight checks and what a user set once (docs/design.md, "Architecture")."""
