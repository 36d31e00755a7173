from celery import shared_task


@shared_task(name="models_registry.tasks.training_run_execute", ignore_result=True)
def training_run_execute_task(run_id: int) -> None:
    from .training import training_run_execute

    training_run_execute(run_id=run_id)
