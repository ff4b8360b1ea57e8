// One typed call per resource of the API, through openapi-fetch and the
// types openapi-typescript generated from the served /openapi.json
// (`schema.d.ts`). tests/clients.rs type-checks it with `tsc --strict`, then
// runs it with node against a live server (`RUNLEDGER_API`, token
// `RUNLEDGER_TOKEN`).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

declare const process: { env: Record<string, string | undefined>; exitCode?: number };

type Run = components["schemas"]["RunState"];

const baseUrl = process.env.RUNLEDGER_API;
const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${process.env.RUNLEDGER_TOKEN}` } });

function check(cond: boolean, what: string): asserts cond {
    if (!cond) throw new Error(`failed: ${what}`);
}

/** The body of a 2xx answer; anything else is a failure naming the call. */
function ok<T>(what: string, answer: { data?: T; error?: unknown; response: Response }): T {
    check(answer.response.ok && answer.data !== undefined, `${what}: ${answer.response.status} ${JSON.stringify(answer.error)}`);
    return answer.data;
}

async function main(): Promise<void> {
    // System.
    const health = ok("healthz", await client.GET("/healthz"));
    check(health.status === "ok", "healthz says ok");
    ok("readyz", await client.GET("/readyz"));

    // Runs: create, read, list with filters, every transition.
    const created: Run = ok("create", await client.POST("/api/runs", {
        body: { task_name: "client-ts", triggered_by: "cron", tags: { env: "ci" }, max_attempts: 3, payload: { n: 1 } },
    }));
    const id = created.id;
    const path = { path: { id } };
    check(created.status === "pending", "a new run is pending");
    const got = ok("get", await client.GET("/api/runs/{id}", { params: path }));
    check(got.id === id && got.tags.env === "ci", "get returns the created run");
    const listed = ok("list", await client.GET("/api/runs", {
        params: { query: { task_name: "client-ts", status: "pending", tag: ["env:ci"], sort_field: "created_at", sort_direction: "desc", limit: 10 } },
    }));
    check(listed.runs.some((r) => r.id === id) && listed.total >= 1, "the list holds the run");

    const started = ok("start", await client.POST("/api/runs/{id}/start", { params: path, body: {} }));
    check(started.status === "running", "start makes it running");
    const beat = ok("heartbeat", await client.POST("/api/runs/{id}/heartbeat", { params: path, body: { expected_version: started.version } }));
    check(beat.heartbeat_at != null, "a heartbeat is recorded");

    // Run details.
    const checkpoint = ok("checkpoint", await client.POST("/api/runs/{id}/checkpoints", { params: path, body: { source: "step-1", state: { cursor: 7 } } }));
    check(checkpoint.sequence === 1, "the first checkpoint is sequence 1");
    check(ok("checkpoints", await client.GET("/api/runs/{id}/checkpoints", { params: path })).checkpoints.length === 1, "one checkpoint");
    ok("log", await client.POST("/api/runs/{id}/logs", { params: path, body: { message: "hello", level: "info" } }));
    check(ok("logs", await client.GET("/api/runs/{id}/logs", { params: path })).logs.length === 1, "one log");
    ok("output", await client.POST("/api/runs/{id}/outputs", { params: path, body: { output_key: "report", value: { rows: 3 } } }));
    check(ok("outputs", await client.GET("/api/runs/{id}/outputs", { params: path })).outputs.length === 1, "one output");
    ok("tool call", await client.POST("/api/runs/{id}/tool-calls", { params: path, body: { tool_name: "grep", status: "success", duration_ms: 5 } }));
    check(ok("tool calls", await client.GET("/api/runs/{id}/tool-calls", { params: path })).tool_calls.length === 1, "one tool call");
    ok("usage", await client.POST("/api/runs/{id}/usage", {
        params: path, body: { provider: "acme", model: "m1", prompt_tokens: 10, completion_tokens: 5 },
    }));
    ok("usage list", await client.GET("/api/runs/{id}/usage", { params: path }));

    const ended = ok("end", await client.POST("/api/runs/{id}/end", { params: path, body: { end_reason: "failed", exit_code: 2, error: "disk full" } }));
    check(ended.status === "ended" && ended.end_reason === "failed" && ended.exit_code === 2, "end records the failure");

    // Its stream (it ends after run.ended), events, history, and the run
    // and the changes as of a position.
    const stream = await client.GET("/api/runs/{id}/stream", { params: path, parseAs: "text" });
    check(stream.response.ok && typeof stream.data === "string" && stream.data.includes("event: run.ended"), "the run's stream");
    const events = ok("events", await client.GET("/api/runs/{id}/events", { params: { path: { id }, query: { limit: 100 } } }));
    const startedAt = events.events.find((e) => e.type === "run.started");
    check(startedAt !== undefined, "the events hold run.started");
    const history = ok("history", await client.GET("/api/runs/{id}/history", { params: path }));
    check(history.history.length === events.events.length, "one history item per event");
    const then = ok("as_of", await client.GET("/api/runs/{id}", { params: { path: { id }, query: { as_of: String(startedAt.position) } } }));
    check(then.status === "running", "as of run.started it was running");
    const diff = ok("diff", await client.GET("/api/runs/diff", { params: { query: { from: String(startedAt.position), to: String(ended.position) } } }));
    check(diff.runs.some((c) => c.id === id), "the diff holds the run");
    const log = ok("global events", await client.GET("/api/events", { params: { query: { after: 0, run_id: id, limit: 100 } } }));
    check(log.events.length === events.events.length, "the log holds the run's events");

    // Tasks.
    const tasks = ok("tasks", await client.GET("/api/tasks"));
    check(tasks.tasks.some((t) => t.task_name === "client-ts"), "the task is listed");
    const taskRuns = ok("task runs", await client.GET("/api/tasks/{taskName}/runs", { params: { path: { taskName: "client-ts" }, query: { status: "failed" } } }));
    check(taskRuns.runs.some((r) => r.id === id), "the task's failed runs hold the run");
    ok("task usage", await client.GET("/api/tasks/{taskName}/usage", { params: { path: { taskName: "client-ts" } } }));

    // Relations, the dead-letter queue, the debug bundle.
    ok("children", await client.GET("/api/runs/{id}/children", { params: path }));
    ok("dependency status", await client.GET("/api/runs/{id}/dependency-status", { params: path }));
    ok("dlq", await client.GET("/api/runs/dlq", { params: { query: { task_name: "client-ts" } } }));
    const bundle = ok("debug bundle", await client.GET("/api/runs/{id}/debug-bundle", { params: path }));
    check(bundle.run.id === id, "the bundle is the run's");

    // Retry, lineage, soft delete and restore.
    const retried = ok("retry", await client.POST("/api/runs/{id}/retry", { params: path, body: { reason: "disk cleaned" } }));
    check("new_run_id" in retried && retried.run_id === id, "retry names the new run");
    const lineage = ok("lineage", await client.GET("/api/runs/{id}/lineage", { params: path }));
    check(lineage.runs.length === 2, "the lineage holds the run and its retry");
    const deleted = ok("delete", await client.DELETE("/api/runs/{id}", { params: path, body: { reason: "noise" } }));
    check(deleted.deleted, "delete marks the run deleted");
    check(!ok("restore", await client.POST("/api/runs/{id}/restore", { params: path, body: {} })).deleted, "restore brings it back");

    // Bulk: a dry run, then a delete whose operation is read back.
    const dry = ok("bulk dry run", await client.POST("/api/runs/bulk/retry", {
        body: { match_all: true, filter: { task_name: "client-ts", status: "failed" }, dry_run: true },
    }));
    check(dry.dry_run && dry.selected === 1, "the dry run selects the failed run");
    const bulk = ok("bulk delete", await client.POST("/api/runs/bulk/delete", { body: { ids: [id] } }));
    const operationId = bulk.operation_id;
    check(bulk.affected === 1 && typeof operationId === "string", "the bulk delete names its operation");
    const operation = ok("operation", await client.GET("/api/operations/{id}", { params: { path: { id: operationId } } }));
    check(operation.kind === "delete" && operation.runs[0]?.run_id === id, "the operation deleted the run");

    // Metrics are text.
    const metrics = await client.GET("/metrics", { parseAs: "text" });
    check(metrics.response.ok && typeof metrics.data === "string" && metrics.data.includes("runledger_build_info"), "metrics");
}

main().then(
    () => console.log("calls.ts: every call answered as typed"),
    (e: unknown) => {
        console.error(e);
        process.exitCode = 1;
    },
);
