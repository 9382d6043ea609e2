"""`make .env`: secrets generated once, existing values kept, new keys appended."""

from __future__ import annotations

from cinema.envfile import new_secret, write_env


def test_fresh_env_gets_random_secrets_and_keeps_defaults(tmp_path):
    template = tmp_path / ".env_template"
    template.write_text("# comment\nPOSTGRES_PUBLICIST_PASSWORD=\nPOSTGRES_PUBLICIST_DB=cinema\nAIRFLOW_UID=50000\n")
    target = tmp_path / ".env"
    assert write_env(template, target) == [
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
    assert write_env(template, target) == ["CLICKHOUSE_PASSWORD"]
    text = target.read_text()
    assert "POSTGRES_PUBLICIST_PASSWORD=mine" in text
    assert "CLICKHOUSE_PASSWORD=" in text
    assert "CLICKHOUSE_PASSWORD=\n" not in text
    assert write_env(template, target) == []


def test_secrets_meet_common_password_rules():
    for _ in range(2000):
        token = new_secret()
        assert len(token) == 32
        assert any(c.isdigit() for c in token)
        assert any(c.isupper() for c in token)
        assert any(c.islower() for c in token)
