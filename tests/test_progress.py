"""Progress lines are plain text: brackets are printed, never read as markup."""

from __future__ import annotations

from reprogram.engine.progress import Reporter


def test_bracketed_text_is_printed_as_it_is(capsys) -> None:
    Reporter(quiet=False).line("[fashion-mnist] dvp-cse seed 1  ar [epochs=9]")
    assert "[fashion-mnist] dvp-cse seed 1  ar [epochs=9]" in capsys.readouterr().err


def test_quiet_prints_nothing(capsys) -> None:
    Reporter(quiet=True).line("anything")
    assert capsys.readouterr().err == ""
