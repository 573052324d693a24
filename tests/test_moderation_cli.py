"""``trio-chat admin ban/unban/bans/log`` on a real history database (a stopped server's;
the running server's case is in tests/test_moderation.py)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.support.moderation import history_db
from trio_chat.cli import main


def admin(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["admin", *args])
    return result.exit_code, result.output


def test_ban_list_unban_and_the_log(tmp_path: Path) -> None:
    db = history_db(tmp_path / "chat.db")
    assert admin("bans", "--db", db) == (0, "no bans server-wide\n")
    code, out = admin("ban", "--db", db, "Bob", "--duration", "2h", "--reason", "spam")
    assert code == 0 and out.startswith("banned Bob  by console"), out
    code, out = admin("ban", "--db", db, "--address", "203.0.113.0/24", "--room", "dev")
    assert code == 0, out
    code, out = admin("bans", "--db", db)
    assert code == 0 and out.count("\n") == 1 and "Bob" in out and "(spam)" in out
    code, out = admin("bans", "--db", db, "--room", "#Dev")
    assert code == 0 and out.startswith("203.0.113.0/24") and "until lifted" in out
    assert admin("unban", "--db", db, "BOB") == (0, "unbanned Bob\n")
    code, out = admin("unban", "--db", db, "Bob")
    assert code == 1 and "Bob is not banned" in out
    code, out = admin("log", "--db", db)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3, out
    assert "console  ban  Bob  7200s  (spam)" in lines[0]
    assert "console  ban  #dev  203.0.113.0/24  until lifted" in lines[1]
    assert "console  unban  Bob" in lines[2]
    code, out = admin("log", "--db", db, "--room", "#dev", "--limit", "5")
    assert code == 0 and out.count("\n") == 1


def test_the_history_still_opens_the_database_after_the_admin_wrote_to_it(
    tmp_path: Path,
) -> None:
    db = history_db(tmp_path / "chat.db")
    assert admin("ban", "--db", db, "Bob")[0] == 0
    history_db(tmp_path / "chat.db")  # the history takes it as its own


def test_bad_input_is_a_usage_error_and_nothing_is_created(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    code, out = admin("bans", "--db", missing)
    assert code == 1 and "no database at" in out
    assert not Path(missing).exists()
    db = history_db(tmp_path / "chat.db")
    for args, words in [
        (("ban", "--db", db), "give a NAME or --address"),
        (("ban", "--db", db, "Bob", "--address", "::1"), "give a NAME or --address"),
        (("ban", "--db", db, "--address", "nowhere"), "IP address or a CIDR"),
        (("ban", "--db", db, "Bob", "--duration", "soon"), "expected seconds"),
        (("ban", "--db", db, "Bob", "--room", "#no room"), "room name"),
        (("ban", "--db", db, "System"), "reserved"),
        (("bans", "--db", ":memory:"), "keeps nothing"),
    ]:
        code, out = admin(*args)
        assert code == 2 and words in out, (args, out)
    assert admin("bans", "--db", db) == (0, "no bans server-wide\n")
