"""The licence: the installed package says EUPL-1.2 and LICENSE is the official text, whole."""

from __future__ import annotations

import hashlib
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# SHA-256 of the English EUPL v1.2 text (80 columns, typographic quotes, Appendix included)
# with its byte-order mark dropped and CRLF line ends turned into LF. Two independently
# published copies gave these same bytes, and a third, wrapped differently, the same words.
OFFICIAL_EUPL_1_2_SHA256 = "6fc9e709ccbfe0d77fbffa2427a983282be2eb88e47b1cdb49f21a83b4d1e665"


def test_pip_show_reports_the_eupl() -> None:
    """What `pip show hulpwijzer` prints as License-Expression (reinstall if this fails)."""
    installed = metadata("hulpwijzer")
    assert installed["License-Expression"] == "EUPL-1.2"
    assert "LICENSE" in (installed.get_all("License-File") or [])


def test_the_licence_file_is_the_whole_official_text() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("EUROPEAN UNION PUBLIC LICENCE v. 1.2")
    for article in ("1. Definitions", "5. Obligations of the Licensee", "15. Applicable Law"):
        assert f"\n{article}\n" in text
    assert "\nAppendix\n" in text and "(LiLiQ-R+)." in text
    assert text.endswith("production of a new\nEUPL version.\n")
    digest = hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest()
    assert digest == OFFICIAL_EUPL_1_2_SHA256, "LICENSE differs from the official EUPL-1.2 text"
