from pathlib import Path

import pytest

from pobatch.corelib.safe_paths import contained, fit_in_path, safe_component, unique_name


@pytest.mark.parametrize("raw,expected", [
    ("../../escape.pdf", "escape.pdf"),
    ("..\\..\\escape.pdf", "escape.pdf"),
    ("CON.pdf", "_CON.pdf"),
    ("lpt1.tar.gz", "_lpt1.tar.gz"),
    ("Quote: A/B <final>?.pdf", "B _final__.pdf"),
    ("report. ", "report"),
    ("...", "unnamed"),
    ("a\x00b\x1fc.pdf", "a_b_c.pdf"),
    ("Facture été №5.pdf", "Facture été №5.pdf"),
])
def test_file_names_from_the_portal(raw, expected):
    assert safe_component(raw, basename=True) == expected


def test_folder_names_keep_separators_as_underscores():
    assert safe_component("Müller & Söhne: GmbH") == "Müller & Söhne_ GmbH"
    assert safe_component("A/B Ltd") == "A_B Ltd"
    assert safe_component("   ", fallback="Unknown") == "Unknown"


def test_long_names_keep_their_extension():
    name = safe_component("x" * 300 + ".pdf", basename=True)
    assert len(name) <= 120 and name.endswith(".pdf")


def test_fit_in_path_respects_the_windows_budget(tmp_path):
    folder = tmp_path / ("d" * 150)
    name = fit_in_path(folder, "y" * 200 + ".docx")
    assert len(str(folder / name)) <= 240 and name.endswith(".docx")
    with pytest.raises(ValueError, match="too long"):
        fit_in_path(Path("/" + "z" * 239), "a.pdf")


def test_unique_name_is_case_insensitive(tmp_path):
    (tmp_path / "invoice.pdf").write_bytes(b"1")
    assert unique_name(tmp_path, "Invoice.PDF", set()) == "Invoice (1).PDF"
    assert unique_name(tmp_path, "a.pdf", {"A.pdf", "a (1).pdf"}) == "a (2).pdf"


def test_contained(tmp_path):
    assert contained(tmp_path, tmp_path / "a.pdf")
    assert not contained(tmp_path, tmp_path / ".." / "a.pdf")
