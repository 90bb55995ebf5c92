"""The audit room's Celery task, as thin glue: Celery beat evaluates the alert rules."""

from __future__ import annotations

from celery import shared_task

from streaming.audit.alerts import alerts_evaluate


@shared_task(name="switchboard.alerts_evaluate", ignore_result=True)
def alerts_evaluate_task() -> dict[str, int]:
    evaluation = alerts_evaluate()
    return {"raised": len(evaluation.raised), "resolved": len(evaluation.resolved)}
