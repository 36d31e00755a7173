"""The two groups of people and the permissions each holds. Synced after every migrate, so
a fresh database and an upgraded one end with the same grants."""
from __future__ import annotations

REVIEWERS = "reviewers"
OPERATORS = "operators"

# app_label.codename
GROUP_PERMISSIONS = {
    REVIEWERS: [
        "review.view_reviewtask",
        "review.decide_reviewtask",
        "gateway.view_predictor",
    ],
    OPERATORS: [
        "gateway.view_predictor",
        "gateway.change_predictor",
        "gateway.view_routingpolicy",
        "gateway.change_routingpolicy",
        "gateway.view_prediction",
        "gateway.view_apiclient",
        "gateway.view_apikey",
        "gateway.change_apikey",  # the admin's "Revoke" action (keys stay read-only)
        "review.view_reviewtask",
        "review.view_decision",
        "review.view_label",
        "review.view_appeal",
        "gateway.view_webhookdelivery",
        "gateway.change_webhookdelivery",  # the admin's "Redeliver" action (records stay read-only)
        "models_registry.view_trainingrun",
        "models_registry.add_trainingrun",
        "models_registry.view_modelversion",
        "models_registry.promote_modelversion",
    ],
}


def roles_sync() -> None:
    from django.contrib.auth.models import Group, Permission

    for group_name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:
                wanted.append(perm)
        group.permissions.add(*wanted)


def roles_sync_on_migrate(sender, **kwargs):
    roles_sync()
