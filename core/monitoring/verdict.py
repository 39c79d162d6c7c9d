"""The run's verdict in one line, for a person: what a refresh found, how many POs are done, how many
need someone and where to look. The desk prints it (core/commands/desk.py) and --on-finish hands it on
(core/monitoring/on_finish.py), so both say the same."""
from __future__ import annotations

from pobatch.core.app import RunSummary
from pobatch.core.exit_codes import EXIT_LOGIN
from pobatch.core.reports.attention import DONE_STATUSES, attention_list, common_failure


def what_changed(summary: RunSummary) -> str:
    """A refresh's news in a few words ("1,998 POs checked, 37 new files in 21 POs"); "" for other runs."""
    if not summary.checked:
        return ""
    n, pos = summary.new_files, summary.new_file_pos
    line = f"{summary.checked:,} PO{'s' if summary.checked != 1 else ''} checked, " + (
        f"{n:,} new file{'s' if n != 1 else ''} in {pos:,} PO{'s' if pos != 1 else ''}" if n else "nothing new")
    if summary.refetched_files:
        line += f" ({summary.refetched_files:,} of them fetched again: missing or changed here)"
    if summary.removed_files:
        gone = summary.removed_files
        line += f", {gone:,} file{'s' if gone != 1 else ''} gone from the portal (kept)"
    return line


def verdict(summary: RunSummary) -> str:
    """One line: how many POs are done and how many need a person ("1,940 of 2,000 POs done; 60 need ..."),
    after a refresh's news."""
    news = what_changed(summary)
    line = _done_line(summary)
    return f"{news}; {line}" if news else line


def _done_line(summary: RunSummary) -> str:
    total = sum(summary.counts.values())
    done = sum(summary.counts.get(s.value, 0) for s in DONE_STATUSES)
    need = total - done
    line = f"{done:,} of {total:,} PO{'s' if total != 1 else ''} done"
    if need == 0:
        return line + "; nothing needs attention."
    line += f"; {need:,} need{'s' if need == 1 else ''} attention, see the 'Attention' sheet"
    if summary.results_path:
        line += f" in {summary.results_path.name}"
    if summary.exit_code == EXIT_LOGIN:
        line += " (sign in first)"
    line += "."
    common = common_failure(attention_list(summary.outcomes, summary.outcomes))
    return f"{line} {common}" if common else line
