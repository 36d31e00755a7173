"""`{% review_queue_box %}`: the review queue at the top of the admin index, for reviewers."""
from django import template
from django.urls import reverse
from django.utils import timezone

from review.admin_queue import DECIDE_PERMISSION
from review.selectors import claimable_tasks, tasks_held_by

register = template.Library()


@register.inclusion_tag("admin/review/queue_box.html", takes_context=True)
def review_queue_box(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm(DECIDE_PERMISSION):
        return {"show": False}
    now = timezone.now()
    return {
        "show": True,
        "waiting": claimable_tasks(now=now, reviewer=user).count(),
        "held": tasks_held_by(reviewer=user, now=now).count(),
        "url": reverse("admin:review_reviewtask_queue"),
    }
