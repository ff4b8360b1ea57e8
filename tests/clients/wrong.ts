// Calls the generated types must refuse: a run created without its required
// `task_name`, one ended with a reason that is not an end reason, and a list
// sorted by a field that is not a sort field.
// tests/clients.rs asserts that `tsc --strict` refuses exactly these, so that
// the check of calls.ts cannot pass vacuously.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const client = createClient<paths>({ baseUrl: "http://127.0.0.1:9477" });

export const created = client.POST("/api/runs", { body: { triggered_by: "cron" } });
export const ended = client.POST("/api/runs/{id}/end", {
    params: { path: { id: "0195f2a0-0000-7000-8000-000000000000" } },
    body: { end_reason: "exploded" },
});
export const listed = client.GET("/api/runs", { params: { query: { sort_field: "created" } } });
