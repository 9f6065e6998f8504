"""`manage.py bootstrap --email E --team T --project P [--json]`: credentials for a new user."""
import json

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services
from accounts.models import Membership, Project, Role, Team
from inferencekey_web.lib.slugs import canonical_slug, is_canonical


class Command(BaseCommand):
    help = "Create or reuse a user, team and project; mint one SDK token and one project-wide data key."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--team", required=True, help="team slug")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--password", help="set this password for the user (for the dashboard)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, email, team, project, password=None, json=False, **options):
        team_slug, project_slug = canonical_slug(team), canonical_slug(project)
        if "@" not in email:
            raise CommandError("--email: not an email address")
        for flag, value in (("--team", team_slug), ("--project", project_slug)):
            if not is_canonical(value):
                raise CommandError(f"{flag}: must contain letters or digits (at most 63 characters)")
        # Hash before the transaction: the write lock (SQLite: BEGIN IMMEDIATE) is held only for the writes.
        hashed = make_password(password) if password else None
        with transaction.atomic():
            user = services.user_get_or_create(email=email)
            if hashed:
                user.password = hashed
                user.save(update_fields=["password"])
            team_obj = Team.objects.filter(slug=team_slug).first()
            if team_obj is None:
                team_obj = services.team_create(name=team, owner=user, slug=team_slug)
            else:
                Membership.objects.get_or_create(team=team_obj, user=user, defaults={"role": Role.OWNER})
            project_obj = Project.objects.filter(team=team_obj, slug=project_slug).first() or services.project_create(
                team=team_obj, name=project, slug=project_slug
            )
            sdk = services.sdk_token_create(project=project_obj, name="bootstrap", created_by=user)
            key = services.data_key_create(project=project_obj, name="bootstrap", created_by=user)
        payload = {"sdk_token": sdk.value, "api_key": key.value, "team": team_obj.slug,
                   "project": project_obj.slug, "base_url": settings.BASE_URL}
        if json:
            self.stdout.write(_dumps(payload))
            return
        self.stdout.write(
            f"team {team_obj.slug}, project {project_obj.slug} (shown once; store them now)\n"
            f"export INFERENCEKEY_BASE_URL={settings.BASE_URL}\n"
            f"export INFERENCEKEY_PROJECT={project_obj.slug}\n"
            f"export INFERENCEKEY_SDK_TOKEN={sdk.value}\n"
            f"export INFERENCEKEY_API_KEY={key.value}\n"
        )


def _dumps(payload) -> str:
    return json.dumps(payload)
