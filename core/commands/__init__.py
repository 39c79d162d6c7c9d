"""The commands a person runs besides a batch: `start` (the desk behind run.bat), `check`, `login`,
the sign-in wait, `doctor` and `support` (docs/design.md, "Architecture")."""
