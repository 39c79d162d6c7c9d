"""Coupa, from the public facts in DESIGN.md (verify against a real tenant when one is available)."""
from __future__ import annotations

from core.sites.definition import SiteDefinition

_FILE_TYPES = (".pdf", ".docx", ".doc", ".msg", ".eml", ".xlsx", ".xls", ".csv", ".zip", ".txt", ".png", ".jpg", ".tif")

COUPA = SiteDefinition(
    name="coupa",
    po_path="/order_headers/{id}",
    login_paths=("/sessions/new", "/sessions", "/login", "/sso"),
    login_selectors=("#user_email", "#user_password", "form#new_session"),
    ready_selectors=(
        "span[data-supplier-name]", "[class*='supplier-name']", ".supplier-info span",
        "a[href*='attachment']", "a[href*='/requisition_headers/']", "h1",
    ),
    supplier_selectors=("span[data-supplier-name]", "[class*='supplier-name']", ".supplier-info span"),
    attachment_selectors=(
        "a[href*='attachment']",
        "a[href*='attachment_file']",
        "a[download]",
        "span[aria-label*='file attachment']",
        "[role='button'][aria-label*='attachment']",
        *(f"span[title*='{ext}' i]" for ext in _FILE_TYPES),
    ),
    requisition_selector="a[href*='/requisition_headers/']",
    not_found_texts=(
        "Oops! We couldn't find what you wanted",
        "The page you were looking for doesn't exist",
    ),
    not_authorized_texts=("You are not authorized", "Access denied"),
    server_error_texts=("We're sorry, but something went wrong",),
    error_selectors=("div.flash_error", "div#error_explanation"),
    overlay_selectors=(".page_buttons_right.orderHeaderShowFloatingSection.floatingSectionOnTop",),
)
