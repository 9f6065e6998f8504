"""`manage.py bootstrap`: the base URL `up` runs on, --reuse instead of a new token per run,
--superuser for /admin/."""
from __future__ import annotations

import io
import json
import stat

import pytest
from django.core.management import call_command

from accounts import services
from accounts.models import DataKey, SdkToken
from inferencekey_web.lib import base_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("INFERENCEKEY_BASE_URL", raising=False)
    settings.DATA_DIR = tmp_path
    settings.BASE_URL = "http://127.0.0.1:8000"
    return tmp_path


def bootstrap(*flags: str, as_json: bool = True):
    out = io.StringIO()
    call_command("bootstrap", "--email", "ada@example.com", "--team", "acme", "--project", "demo", *flags,
                 *(["--json"] if as_json else []), stdout=out)
    return json.loads(out.getvalue()) if as_json else out.getvalue()


def test_bootstrap_prints_the_base_url_up_recorded(data_dir):
    base_url.record(data_dir, "http://127.0.0.1:8765")
    assert bootstrap()["base_url"] == "http://127.0.0.1:8765"
    assert "export INFERENCEKEY_BASE_URL=http://127.0.0.1:8765\n" in bootstrap(as_json=False)


def test_base_url_flag_and_environment_win(data_dir, monkeypatch):
    base_url.record(data_dir, "http://127.0.0.1:8765")
    assert bootstrap("--base-url", "https://ik.example.com/")["base_url"] == "https://ik.example.com"
    monkeypatch.setenv("INFERENCEKEY_BASE_URL", "https://env.example.com")
    assert bootstrap()["base_url"] == "https://env.example.com"


def test_each_run_mints_new_credentials_and_says_so():
    first, second = bootstrap(), bootstrap()
    assert first["sdk_token"] != second["sdk_token"] and SdkToken.objects.count() == 2
    assert "earlier ones stay active" in bootstrap(as_json=False)


def test_reuse_prints_the_same_active_credentials_without_minting(data_dir):
    first = bootstrap("--reuse")
    assert not first["reused"]
    assert stat.S_IMODE((data_dir / "bootstrap-credentials.json").stat().st_mode) == 0o600
    again = bootstrap("--reuse")
    assert again["reused"] and (again["sdk_token"], again["api_key"]) == (first["sdk_token"], first["api_key"])
    assert SdkToken.objects.count() == 1 and DataKey.objects.count() == 1


def test_reuse_mints_again_once_the_kept_key_is_revoked():
    first = bootstrap("--reuse")
    services.credential_revoke(credential=DataKey.objects.get())
    again = bootstrap("--reuse")
    assert not again["reused"] and again["api_key"] != first["api_key"]


def test_superuser_flag_opens_the_admin(client):
    bootstrap("--password", "a-long-pass-phrase", "--superuser")
    assert client.login(username="ada@example.com", password="a-long-pass-phrase")
    assert client.get("/admin/").status_code == 200


def test_without_the_flag_the_admin_stays_closed(client):
    bootstrap("--password", "a-long-pass-phrase")
    client.login(username="ada@example.com", password="a-long-pass-phrase")
    assert client.get("/admin/").status_code == 302


def test_bad_base_url_is_refused():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--base-url"):
        bootstrap("--base-url", "ik.example.com")
