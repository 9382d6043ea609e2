"""`make .env`: secrets generated once, existing values kept, new keys appended, ports of its own."""

from __future__ import annotations

import socket

from cinema.envfile import new_secret, write_env


def values_of(target):
    return dict(line.split("=", 1) for line in target.read_text().splitlines() if "=" in line and line[0] != "#")


def test_fresh_env_gets_random_secrets_and_keeps_defaults(tmp_path):
    template = tmp_path / ".env_template"
    template.write_text("# comment\nPOSTGRES_PUBLICIST_PASSWORD=\nPOSTGRES_PUBLICIST_DB=cinema\nAIRFLOW_UID=50000\n")
    target = tmp_path / ".env"
    assert write_env(template, target, tmp_path / "ports.json").added == [
        "AIRFLOW_UID",
        "POSTGRES_PUBLICIST_DB",
        "POSTGRES_PUBLICIST_PASSWORD",
    ]
    values = dict(line.split("=", 1) for line in target.read_text().splitlines() if "=" in line)
    assert len(values["POSTGRES_PUBLICIST_PASSWORD"]) >= 24
    assert values["POSTGRES_PUBLICIST_DB"] == "cinema"
    assert target.stat().st_mode & 0o777 == 0o600


def test_existing_values_survive_and_new_keys_are_added(tmp_path):
    template = tmp_path / ".env_template"
    target = tmp_path / ".env"
    target.write_text("POSTGRES_PUBLICIST_PASSWORD=mine\n")
    template.write_text("POSTGRES_PUBLICIST_PASSWORD=\nCLICKHOUSE_PASSWORD=\n")
    assert write_env(template, target, tmp_path / "ports.json").added == ["CLICKHOUSE_PASSWORD"]
    text = target.read_text()
    assert "POSTGRES_PUBLICIST_PASSWORD=mine" in text
    assert "CLICKHOUSE_PASSWORD=" in text
    assert "CLICKHOUSE_PASSWORD=\n" not in text
    assert write_env(template, target, tmp_path / "ports.json").added == []


def test_secrets_meet_common_password_rules():
    for _ in range(2000):
        token = new_secret()
        assert len(token) == 32
        assert any(c.isdigit() for c in token)
        assert any(c.isupper() for c in token)
        assert any(c.islower() for c in token)


PORTS_TEMPLATE = "POSTGRES_PUBLICIST_PORT=55432\nPOSTGRES_SUBSCRIPTION_PORT=55433\nLOADER_METRICS_PORT=9464\n"


def test_two_checkouts_get_different_ports_and_are_told_which(tmp_path):
    registry = tmp_path / "ports.json"
    chosen = []
    for name in ("first", "second"):
        checkout = tmp_path / name
        checkout.mkdir()
        (checkout / ".env_template").write_text(PORTS_TEMPLATE)
        update = write_env(checkout / ".env_template", checkout / ".env", registry)
        assert values_of(checkout / ".env") == {key: str(port) for key, port in update.ports.items()}
        chosen.append(update)
    first, second = chosen
    assert set(first.ports.values()).isdisjoint(second.ports.values())
    assert len(set(second.ports.values())) == 3
    assert second.defaults_taken_by == [str(tmp_path / "first")]
    assert f"the defaults are taken: {tmp_path / 'first'}" in second.describe()
    assert "POSTGRES_PUBLICIST_PORT=" in second.describe()


def test_a_checkout_whose_env_is_gone_gives_its_ports_back(tmp_path):
    registry = tmp_path / "ports.json"
    for name in ("gone", "next"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".env_template").write_text(PORTS_TEMPLATE)
    gone = write_env(tmp_path / "gone" / ".env_template", tmp_path / "gone" / ".env", registry)
    (tmp_path / "gone" / ".env").unlink()
    later = write_env(tmp_path / "next" / ".env_template", tmp_path / "next" / ".env", registry)
    assert later.ports == gone.ports
    assert later.defaults_taken_by == []


def test_a_port_something_listens_on_is_skipped(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        (tmp_path / ".env_template").write_text(f"POSTGRES_PUBLICIST_PORT={busy}\n")
        update = write_env(tmp_path / ".env_template", tmp_path / ".env", tmp_path / "ports.json")
    assert update.ports["POSTGRES_PUBLICIST_PORT"] > busy


def test_port_lines_deleted_from_an_env_get_free_ports_again(tmp_path):
    registry = tmp_path / "ports.json"
    for name in ("other", "mine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".env_template").write_text(PORTS_TEMPLATE + "POSTGRES_PUBLICIST_PASSWORD=\n")
    other = write_env(tmp_path / "other" / ".env_template", tmp_path / "other" / ".env", registry)
    mine = tmp_path / "mine" / ".env"
    kept = new_secret()
    mine.write_text(f"POSTGRES_PUBLICIST_PASSWORD={kept}\n")
    update = write_env(tmp_path / "mine" / ".env_template", mine, registry)
    assert sorted(update.ports) == sorted(other.ports)
    assert set(update.ports.values()).isdisjoint(other.ports.values())
    assert values_of(mine)["POSTGRES_PUBLICIST_PASSWORD"] == kept
    assert values_of(mine)["POSTGRES_PUBLICIST_PORT"] == str(update.ports["POSTGRES_PUBLICIST_PORT"])
