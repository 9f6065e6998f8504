"""`manage.py bootstrap --email E --team T --project P [--password PW] [--superuser] [--reuse]
[--base-url URL] [--json]`: a user, team and project, and credentials for the SDK.

Secrets are stored hashed, so a minted value can only be printed once. Each run mints a new SDK
token and data key (earlier ones stay active until revoked), unless `--reuse`: then the values are
kept in `<data dir>/bootstrap-credentials.json` (mode 0600, the data dir's trust level: it already
holds the SECRET_KEY and the agent's credential) and printed again while they are still active.
"""
import json
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services
from accounts.models import DataKey, Membership, Project, Role, SdkToken, Team
from inferencekey_web.lib import base_url as base_url_file
from inferencekey_web.lib import credentials
from inferencekey_web.lib.slugs import canonical_slug, is_canonical

REUSE_FILE = "bootstrap-credentials.json"


class Command(BaseCommand):
    help = "Create or reuse a user, team and project; mint (or with --reuse, reuse) an SDK token and a data key."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--team", required=True, help="team slug")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--password", help="set this password for the user (for the dashboard)")
        parser.add_argument("--superuser", "--admin", action="store_true", dest="superuser",
                            help="make the user staff and superuser (reaches /admin/)")
        parser.add_argument("--reuse", action="store_true",
                            help=f"print the token and key kept by an earlier --reuse run (data dir/{REUSE_FILE}, "
                                 "mode 0600) while they are active, instead of minting new ones")
        parser.add_argument("--base-url", help="the URL to print (default: INFERENCEKEY_BASE_URL, else the URL "
                                               "`up` recorded in the data dir, else http://127.0.0.1:8000)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, email, team, project, password=None, superuser=False, reuse=False, base_url=None,
               json=False, **options):
        team_slug, project_slug = canonical_slug(team), canonical_slug(project)
        if "@" not in email:
            raise CommandError("--email: not an email address")
        for flag, value in (("--team", team_slug), ("--project", project_slug)):
            if not is_canonical(value):
                raise CommandError(f"{flag}: must contain letters or digits (at most 63 characters)")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise CommandError("--base-url: must start with http:// or https://")
        url = base_url_file.resolve(settings.DATA_DIR, flag=base_url, default=settings.BASE_URL)
        # Hash before the transaction: the write lock (SQLite: BEGIN IMMEDIATE) is held only for the writes.
        hashed = make_password(password) if password else None
        with transaction.atomic():
            user = services.user_get_or_create(email=email)
            fields = []
            if hashed:
                user.password = hashed
                fields.append("password")
            if superuser and not (user.is_staff and user.is_superuser):
                user.is_staff = user.is_superuser = True
                fields += ["is_staff", "is_superuser"]
            if fields:
                user.save(update_fields=fields)
            team_obj = Team.objects.filter(slug=team_slug).first()
            if team_obj is None:
                team_obj = services.team_create(name=team, owner=user, slug=team_slug)
            else:
                Membership.objects.get_or_create(team=team_obj, user=user, defaults={"role": Role.OWNER})
            project_obj = Project.objects.filter(team=team_obj, slug=project_slug).first() or services.project_create(
                team=team_obj, name=project, slug=project_slug
            )
            kept = _kept(project_obj) if reuse else None
            if kept is None:
                sdk = services.sdk_token_create(project=project_obj, name="bootstrap", created_by=user).value
                key = services.data_key_create(project=project_obj, name="bootstrap", created_by=user).value
            else:
                sdk, key = kept
        if reuse and kept is None:
            _keep(project_obj, sdk, key)
        payload = {"sdk_token": sdk, "api_key": key, "team": team_obj.slug, "project": project_obj.slug,
                   "base_url": url, "reused": kept is not None}
        if json:
            self.stdout.write(_dumps(payload))
            return
        if kept is not None:
            note = f"reused the token and key kept in {_reuse_path()} (still active)"
        elif reuse:
            note = f"minted a new token and key, kept in {_reuse_path()} (mode 0600) for the next --reuse"
        else:
            note = ("minted a new token and key, shown once: store them now (earlier ones stay active until "
                    "revoked; --reuse prints the same ones each run)")
        self.stdout.write(
            f"# team {team_obj.slug}, project {project_obj.slug}: {note}\n"
            f"export INFERENCEKEY_BASE_URL={url}\n"
            f"export INFERENCEKEY_PROJECT={project_obj.slug}\n"
            f"export INFERENCEKEY_SDK_TOKEN={sdk}\n"
            f"export INFERENCEKEY_API_KEY={key}\n"
        )
        if superuser:
            self.stdout.write(f"# {user.email} is staff and superuser: {url}/admin/\n")


def _reuse_path() -> Path:
    return Path(settings.DATA_DIR) / REUSE_FILE


def _read_kept() -> dict:
    try:
        data = json.loads(_reuse_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _active(queryset, value) -> bool:
    parsed = credentials.parse(value) if isinstance(value, str) else None
    if not parsed:
        return False
    record = queryset.active().filter(lookup_id=parsed[1]).first()
    return record is not None and credentials.matches(value, record.secret_hash)


def _kept(project: Project) -> tuple[str, str] | None:
    """The kept token and key of this project, if both are still active (not revoked, not expired)."""
    entry = _read_kept().get(project.id)
    if not isinstance(entry, dict):
        return None
    sdk, key = entry.get("sdk_token"), entry.get("api_key")
    if (_active(SdkToken.objects.filter(project=project), sdk)
            and _active(DataKey.objects.filter(project=project), key)):
        return sdk, key
    return None


def _keep(project: Project, sdk: str, key: str) -> None:
    data = _read_kept()
    data[project.id] = {"team": project.team.slug, "project": project.slug, "sdk_token": sdk, "api_key": key}
    path = _reuse_path()
    tmp = path.with_name(f".{REUSE_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_dumps(data))
    os.replace(tmp, path)


def _dumps(payload) -> str:
    return json.dumps(payload)
