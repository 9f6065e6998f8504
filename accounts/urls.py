from django.urls import path

from . import views

app_name = "accounts"

_project = "t/<slug:team>/p/<str:project>/"

urlpatterns = [
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/signup/sent/", views.signup_sent, name="signup_sent"),
    path("accounts/signup/confirm/<str:token>/", views.signup_confirm, name="signup_confirm"),
    path("invitations/<str:secret>/", views.invitation, name="invitation"),
    path("accounts/login/", views.login_view, name="login"),
    path("accounts/logout/", views.logout_view, name="logout"),
    path("accounts/password-reset/", views.password_reset, name="password_reset"),
    path("accounts/password-reset/sent/", views.password_reset_done, name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", views.password_reset_confirm, name="password_reset_confirm"),
    path("accounts/reset/done/", views.password_reset_complete, name="password_reset_complete"),
    path("teams/new/", views.team_create, name="team_create"),
    path("t/<slug:team>/", views.team_home, name="team_home"),
    path("t/<slug:team>/settings/", views.team_settings, name="team_settings"),
    path("t/<slug:team>/leave/", views.team_leave, name="team_leave"),
    path("t/<slug:team>/members/", views.members, name="members"),
    path("t/<slug:team>/members/invite/", views.member_invite, name="member_invite"),
    path("t/<slug:team>/members/invitations/<int:pk>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("t/<slug:team>/members/<int:pk>/role/", views.member_role, name="member_role"),
    path("t/<slug:team>/members/<int:pk>/remove/", views.member_remove, name="member_remove"),
    path("t/<slug:team>/projects/new/", views.project_create, name="project_create"),
    path(_project, views.project_home, name="project_home"),
    path(_project + "settings/", views.project_settings, name="project_settings"),
    path(_project + "tokens/", views.sdk_tokens, name="sdk_tokens"),
    path(_project + "tokens/new/", views.credential_create, {"kind": "tokens"}, name="sdk_token_create"),
    path(_project + "tokens/<str:pk>/revoke/", views.credential_revoke, {"kind": "tokens"}, name="sdk_token_revoke"),
    path(_project + "keys/", views.data_keys, name="data_keys"),
    path(_project + "keys/new/", views.credential_create, {"kind": "keys"}, name="data_key_create"),
    path(_project + "keys/<str:pk>/revoke/", views.credential_revoke, {"kind": "keys"}, name="data_key_revoke"),
]
