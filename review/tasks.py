from celery import shared_task


@shared_task(name="review.tasks.lease_sweep", ignore_result=True)
def lease_sweep() -> int:
    """Return tasks whose review lease expired to the queue (beat)."""
    from .services import review_leases_expire

    return review_leases_expire()
