"""One call per resource of the API through the client openapi-python-client
generated from the served /openapi.json (the package `runledger_client`),
against a live server (`RUNLEDGER_API`, token `RUNLEDGER_TOKEN`).

Every answer is parsed by the generated models; a parser that refuses the
server's real answer, or a model left holding fields its schema does not
name, is a document that drifted from the server."""

import os
import sys
from typing import Any, TypeVar

import attrs

from runledger_client import AuthenticatedClient, Client
from runledger_client.api.bulk import bulk_delete, bulk_retry, get_operation
from runledger_client.api.events import list_events
from runledger_client.api.operations import healthz, prometheus, readyz
from runledger_client.api.runs import (
    create_run, debug_bundle, delete_run, dependency_status, end_run, get_run,
    heartbeat_run, list_checkpoints, list_children, list_dlq, list_logs,
    list_outputs, list_runs, list_tool_calls, list_usage, record_checkpoint,
    record_log, record_output, record_tool_call, record_usage, restore_run,
    retry_run, run_events, run_lineage, start_run,
)
from runledger_client.api.tasks import list_task_runs, list_tasks, task_usage
from runledger_client.api.time_travel import run_history, runs_diff
from runledger_client.models import (
    BulkCount, BulkRequest, BulkRequestFilterType0, Checkpoint,
    CheckpointList, CheckpointRequest, CreateRunRequest,
    CreateRunRequestTagsType0, DebugBundle, DependencyStatus, EndReason,
    EndRequest, EventPage, Health, HeartbeatRequest, Lineage, LogList,
    LogRequest, NotNullType0, OperationRecord, OutputList, OutputRequest, Problem,
    ReasonRequest, RetryAccepted, RetryRequest, RunEvents, RunHistory,
    RunList, RunState, RunStatus, RunsDiff, RunUsage, SortField, StartRequest,
    TaskList,
    TaskUsage, ToolCallList, ToolCallRequest, TriggeredBy, UsageRequest,
)
from runledger_client.types import Response

T = TypeVar("T")


def undocumented(value: Any, where: str) -> list[str]:
    """Fields a parsed model holds that its schema does not name: a model
    with declared fields keeps the rest in `additional_properties`."""
    found: list[str] = []
    if attrs.has(type(value)):
        fields = [f.name for f in attrs.fields(type(value))]
        extra = getattr(value, "additional_properties", {})
        if extra and fields != ["additional_properties"]:
            found.append(f"{where}: {type(value).__name__} {sorted(extra)}")
        for name in fields:
            if name != "additional_properties":
                found += undocumented(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += undocumented(item, f"{where}[{i}]")
    return found


def ok(what: str, answer: Response[Any], kind: type[T]) -> T:
    """The parsed body of a 2xx answer, of the documented model."""
    parsed = answer.parsed
    assert 200 <= answer.status_code < 300, f"{what}: {answer.status_code} {answer.content!r}"
    assert isinstance(parsed, kind), f"{what}: parsed as {type(parsed).__name__}, not {kind.__name__}"
    extra = undocumented(parsed, what)
    assert not extra, f"{what}: undocumented fields {extra}"
    return parsed


def main() -> None:
    base = os.environ["RUNLEDGER_API"]
    client = AuthenticatedClient(base_url=base, token=os.environ["RUNLEDGER_TOKEN"], raise_on_unexpected_status=True)
    public = Client(base_url=base, raise_on_unexpected_status=True)

    # System.
    assert ok("healthz", healthz.sync_detailed(client=public), Health).status == "ok"
    ok("readyz", readyz.sync_detailed(client=public), Health)

    # Runs: create, read, list with filters, every transition.
    tags = CreateRunRequestTagsType0.from_dict({"env": "ci"})
    body = CreateRunRequest(task_name="client-py", triggered_by=TriggeredBy.CRON, tags=tags, max_attempts=3, payload={"n": 1})
    created = ok("create", create_run.sync_detailed(client=client, body=body), RunState)
    run = created.id
    assert created.status == RunStatus.PENDING, created.status
    got = ok("get", get_run.sync_detailed(run, client=client), RunState)
    assert got.id == run and got.tags["env"] == "ci" and got.payload == {"n": 1}, got
    listed = ok("list", list_runs.sync_detailed(
        client=client, task_name="client-py", status="pending", tag=["env:ci"], sort_field=SortField.CREATED_AT, limit=10,
    ), RunList)
    assert run in [r.id for r in listed.runs] and listed.total >= 1, listed

    started = ok("start", start_run.sync_detailed(run, client=client, body=StartRequest()), RunState)
    assert started.status == RunStatus.RUNNING, started.status
    beat = ok("heartbeat", heartbeat_run.sync_detailed(run, client=client, body=HeartbeatRequest(expected_version=started.version)), RunState)
    assert beat.heartbeat_at is not None and beat.version == started.version + 1, beat

    # Run details.
    state = NotNullType0.from_dict({"cursor": 7})
    checkpoint = ok("checkpoint", record_checkpoint.sync_detailed(run, client=client, body=CheckpointRequest(state=state, source="step-1")), Checkpoint)
    assert checkpoint.sequence == 1 and checkpoint.state == {"cursor": 7}, checkpoint
    checkpoints = ok("checkpoints", list_checkpoints.sync_detailed(run, client=client), CheckpointList)
    assert [c.sequence for c in checkpoints.checkpoints] == [1], checkpoints
    record_log.sync_detailed(run, client=client, body=LogRequest(message="hello", level="info"))
    assert len(ok("logs", list_logs.sync_detailed(run, client=client), LogList).logs) == 1
    record_output.sync_detailed(run, client=client, body=OutputRequest(output_key="report", value={"rows": 3}))
    assert len(ok("outputs", list_outputs.sync_detailed(run, client=client), OutputList).outputs) == 1
    record_tool_call.sync_detailed(run, client=client, body=ToolCallRequest(tool_name="grep", status="success", duration_ms=5))
    assert len(ok("tool calls", list_tool_calls.sync_detailed(run, client=client), ToolCallList).tool_calls) == 1
    record_usage.sync_detailed(run, client=client, body=UsageRequest(provider="acme", model="m1", prompt_tokens=10, completion_tokens=5))
    ok("usage", list_usage.sync_detailed(run, client=client), RunUsage)

    end = EndRequest(end_reason=EndReason.FAILED, exit_code=2, error="disk full")
    ended = ok("end", end_run.sync_detailed(run, client=client, body=end), RunState)
    assert ended.status == RunStatus.ENDED and ended.end_reason == EndReason.FAILED and ended.exit_code == 2, ended

    # Its events, history, and the run and the changes as of a position.
    events = ok("events", run_events.sync_detailed(run, client=client, limit=100), RunEvents).events
    started_at = next(e.position for e in events if e.type_ == "run.started")
    history = ok("history", run_history.sync_detailed(run, client=client), RunHistory).history
    assert len(history) == len(events), (history, events)
    then = ok("as_of", get_run.sync_detailed(run, client=client, as_of=str(started_at)), RunState)
    assert then.status == RunStatus.RUNNING, then.status
    diff = ok("diff", runs_diff.sync_detailed(client=client, from_=str(started_at), to=str(ended.position)), RunsDiff)
    assert str(run) in [c.id for c in diff.runs], diff
    page = ok("global events", list_events.sync_detailed(client=client, after=0, run_id=run, limit=100), EventPage)
    assert [e.position for e in page.events] == [e.position for e in events]

    # Tasks.
    tasks = ok("tasks", list_tasks.sync_detailed(client=client), TaskList)
    assert "client-py" in [t.task_name for t in tasks.tasks], tasks
    failed = ok("task runs", list_task_runs.sync_detailed("client-py", client=client, status="failed"), RunList)
    assert [r.id for r in failed.runs] == [run], failed
    ok("task usage", task_usage.sync_detailed("client-py", client=client), TaskUsage)

    # Relations, the dead-letter queue, the debug bundle.
    ok("children", list_children.sync_detailed(run, client=client), RunList)
    ok("dependency status", dependency_status.sync_detailed(run, client=client), DependencyStatus)
    ok("dlq", list_dlq.sync_detailed(client=client, task_name="client-py"), RunList)
    bundle = ok("debug bundle", debug_bundle.sync_detailed(run, client=client), DebugBundle)
    assert bundle.run.id == run, bundle.run

    # Retry, lineage, soft delete and restore.
    retried = ok("retry", retry_run.sync_detailed(run, client=client, body=RetryRequest(reason="disk cleaned")), RetryAccepted)
    assert str(retried.run_id) == str(run), retried
    lineage = ok("lineage", run_lineage.sync_detailed(run, client=client), Lineage)
    assert [str(r.id) for r in lineage.runs] == [str(run), str(retried.new_run_id)], lineage
    assert ok("delete", delete_run.sync_detailed(run, client=client, body=ReasonRequest(reason="noise")), RunState).deleted
    assert not ok("restore", restore_run.sync_detailed(run, client=client, body=ReasonRequest()), RunState).deleted

    # Bulk: a dry run, then a delete whose operation is read back.
    selector = BulkRequestFilterType0.from_dict({"task_name": "client-py", "status": "failed"})
    dry = ok("bulk dry run", bulk_retry.sync_detailed(client=client, body=BulkRequest(match_all=True, filter_=selector, dry_run=True)), BulkCount)
    assert dry.dry_run and dry.selected == 1, dry
    deleted = ok("bulk delete", bulk_delete.sync_detailed(client=client, body=BulkRequest(ids=[run])), BulkCount)
    assert deleted.affected == 1 and isinstance(deleted.operation_id, str), deleted
    operation = ok("operation", get_operation.sync_detailed(deleted.operation_id, client=client), OperationRecord)
    assert operation.kind == "delete" and [r.run_id for r in operation.runs] == [run], operation

    # Metrics are text; a refusal parses as a problem.
    metrics = prometheus.sync_detailed(client=public)
    assert isinstance(metrics.parsed, str) and "runledger_build_info" in metrics.parsed, metrics.content[:200]
    refused = get_run.sync_detailed(run, client=AuthenticatedClient(base_url=base, token="rl_unknown"))
    assert refused.status_code == 401 and isinstance(refused.parsed, Problem) and refused.parsed.code == "unauthorized", refused

    print("calls.py: every call answered and parsed as documented")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test shows the whole traceback
        import traceback
        traceback.print_exc()
        sys.exit(1)
