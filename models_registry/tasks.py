from celery import shared_task


@shared_task(name="models_registry.tasks.training_run_execute", ignore_result=True)
def training_run_execute_task(run_id: int) -> None:
    from .training import training_run_execute

    training_run_execute(run_id=run_id)


@shared_task(name="models_registry.tasks.training_runs_reap", ignore_result=True)
def training_runs_reap() -> dict:
    """Fail runs whose worker stopped beating, and runs no worker ever started (beat)."""
    from .training import training_runs_reap as reap

    return reap()


@shared_task(name="models_registry.tasks.training_schedule_sweep", ignore_result=True)
def training_schedule_sweep() -> dict:
    """Request the runs that predictors' `retrain_every_hours` make due (beat)."""
    from .training import training_schedule_sweep as sweep

    return sweep()


@shared_task(name="models_registry.tasks.shadow_gates_sweep", ignore_result=True)
def shadow_gates_sweep() -> dict:
    """Re-evaluate candidates and challengers whose shadow-agreement gate is pending (beat)."""
    from .gates import shadow_gates_sweep as sweep

    return sweep()


@shared_task(name="models_registry.tasks.drift_check_all", ignore_result=True)
def drift_check_all() -> dict:
    """Compare every champion's live traffic with its training reference (beat)."""
    from .drift import drift_check_all as check

    return check()
