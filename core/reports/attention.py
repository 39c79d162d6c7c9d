"""Which POs need a person, and what to tell that person, in plain words.

The results workbook's "Attention" sheet and the one-line verdict at the end of a run both read this,
so the two always agree on what "needs attention" means. A PO is done when the portal gave a final
answer nobody has to act on (its files, or "this PO has no attachments"); everything else needs a
person: a sign-in, a PO number to check, or simply running the same file again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from pobatch.core.results import PoOutcome
from pobatch.core.status import Status

# Final answers nobody has to act on. PO_NOT_FOUND is final too, but a person must check the number.
DONE_STATUSES = frozenset({Status.COMPLETED, Status.NO_ATTACHMENTS})

RERUN = "Run the same file again: completed POs are kept and the rest are tried again."
SIGN_IN = ("Sign in (run.bat / run.sh offer it, or 'pobatch login'), then run the same file again; "
           "finished POs are kept.")
# Running again cannot help a page the site definition does not describe: `check` says which key to change.
CHECK = ("Run 'pobatch check {po}' to see what the page shows, then adjust the site file (the key 'check' "
         "names); running the same file again will not help until then.")

# What a TIMEOUT waited for, by its reason (core/workflow/progress.py): "too slow" only where the portal was.
TIMEOUT_WHAT = {
    "TIMEOUT": "The portal was too slow to send this PO's page.",
    "ATTACHMENTS_NOT_SETTLED": "The PO page came, but its list of attachments never finished loading.",
    "DOWNLOAD_NOT_BEGUN": "Clicking an attachment started no download.",
    "DOWNLOAD_TIMEOUT": "A download did not finish in time: the portal sent the file too slowly.",
    "SSO_TIMEOUT": "The browser went to the sign-in service and did not come back in time.",
}
COMMON_MIN = 3  # POs that fail the same way before the end-of-run line says so


@dataclass(frozen=True)
class Attention:
    """One line of the Attention sheet: why this PO needs a person and what they should do."""

    po_number: str
    status: str
    what_happened: str
    what_to_do: str
    details: str = ""


def needs_attention(outcome: PoOutcome | None) -> bool:
    return outcome is None or outcome.status not in DONE_STATUSES


def advice(po_number: str, outcome: PoOutcome | None) -> Attention | None:
    """The plain-words line for one PO, or None when the PO is done."""
    if not needs_attention(outcome):
        return None
    if outcome is None:
        return Attention(po_number, Status.PENDING.value, "Not reached yet: the run stopped before this PO.", RERUN)
    status, reason, details = outcome.status, outcome.reason, outcome.error_message
    if status is Status.LOGIN_REQUIRED or reason == "LOGIN_REQUIRED":
        return Attention(po_number, status.value, "The portal asked for a sign-in before this PO was done.",
                         SIGN_IN, details)
    if status is Status.PO_NOT_FOUND:
        if reason == "NOT_AUTHORIZED":
            return Attention(po_number, status.value, "The portal says you may not see this PO.",
                             "Check the PO number in your file; if it is right, ask for access to the PO.", details)
        return Attention(po_number, status.value, "The portal has no PO with this number.",
                         "Check the PO number in your file (a typo, or a PO of another company?).", details)
    if status is Status.PARTIAL:
        return Attention(po_number, status.value,
                         f"Only {outcome.attachments_downloaded} of {outcome.attachments_found} attachment(s) "
                         "could be downloaded.", RERUN, details)
    if status is Status.TIMEOUT:
        return Attention(po_number, status.value, TIMEOUT_WHAT.get(reason, TIMEOUT_WHAT["TIMEOUT"]), RERUN, details)
    if reason == "UNRECOGNISED_PAGE":
        return Attention(po_number, status.value, "pobatch did not recognise the page the portal showed for this PO.",
                         CHECK.format(po=po_number), details)
    if status in (Status.INTERRUPTED, Status.RUNNING):
        return Attention(po_number, status.value, "The run was stopped while this PO was being processed.",
                         RERUN, details)
    if status is Status.PENDING:
        return Attention(po_number, status.value, "Not reached yet: the run stopped before this PO.", RERUN, details)
    return Attention(po_number, status.value, "Something went wrong with this PO"
                     + (f" ({reason})." if reason else "."),
                     RERUN + " If it fails again, open the PO in the portal (PO_URL) to see why.", details)


def common_failure(lines: list[Attention]) -> str:
    """One sentence when most of the POs that need a person failed the same way (at least COMMON_MIN),
    so the end-of-run line can say it once instead of leaving it to 500 rows: '' otherwise."""
    groups: dict[str, list[Attention]] = {}
    for a in lines:
        groups.setdefault(a.what_happened, []).append(a)
    if not groups:
        return ""
    what, same = max(groups.items(), key=lambda kv: len(kv[1]))
    if len(same) < COMMON_MIN or len(same) * 2 < len(lines):
        return ""
    first = same[0]
    todo = first.what_to_do.replace(f"'pobatch check {first.po_number}'",
                                    f"'pobatch check {first.po_number}' (one of them)")
    return f"{len(same):,} of them the same way: {what} {todo}"


def attention_list(po_numbers: Iterable[str], outcomes: Mapping[str, PoOutcome]) -> list[Attention]:
    """The POs that need a person, in the order of the orders file."""
    return [a for po in po_numbers if (a := advice(po, outcomes.get(po))) is not None]
