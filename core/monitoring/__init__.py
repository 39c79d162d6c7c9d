"""What the main process tells while a run goes and when it ends: the console view, the run log (its
text redacted), the watch on the stream for sign-in pages and a silent portal, and --on-finish
(docs/design.md, "Architecture")."""
