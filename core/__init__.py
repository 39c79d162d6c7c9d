"""pobatch application layer: the PO workflow, the CLI, MainApp and reports."""

__version__ = "0.1.0"
