//! What every route answers besides its own responses, added to the OpenAPI
//! document in one pass over it (like [`super::auth::document`]), from the
//! shape of the route: the layers that answer these statuses and headers
//! (auth, rate limits, body limits, idempotency, the request timeout) wrap
//! every route the same way, so the rule is stated once here too.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The `data:` of an SSE frame and each item of an event list: a stored
/// event as the log holds it.
#[derive(Serialize, ToSchema)]
#[schema(as = EventEnvelope)]
#[allow(dead_code)]
pub struct EnvelopeSchema {
    /// Global, gap-free, strictly increasing: the order of commit.
    #[schema(minimum = 1)]
    position: i64,
    #[schema(value_type = String, format = Uuid)]
    event_id: String,
    /// `run-<run id>`.
    #[schema(pattern = "^run-[0-9a-fA-F-]{36}$")]
    stream_id: String,
    /// The event's 1-based index in its stream.
    #[schema(minimum = 1)]
    stream_version: i64,
    #[serde(rename = "type")]
    #[schema(value_type = runledger_projections::schema::EventTypeSchema)]
    event_type: String,
    #[schema(minimum = 1)]
    schema_version: i32,
    /// The event's body; its shape depends on `type`.
    data: Value,
    metadata: MetadataSchema,
    #[schema(value_type = String, format = DateTime)]
    recorded_at: String,
    /// SHA-256 (hex) of the previous event; the first event's is all zeros.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    prev_hash: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    hash: String,
}

/// Who caused an event, and in which request.
#[derive(Serialize, ToSchema)]
#[schema(as = EventMetadata)]
#[allow(dead_code)]
pub struct MetadataSchema {
    /// The token's name, `anonymous` when the API runs open, `system` for deadlines.
    actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// The bulk operation the event belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<String>,
    /// The W3C trace id of the request that appended the event: the trace id
    /// of its `traceparent` header (absent without a valid one), or, when the
    /// server exports spans over OTLP, of the trace its request span began.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-f]{32}$")]
    trace_id: Option<String>,
}

/// `as_of`, `from`, `to`: a log position or an RFC 3339 time.
pub struct AsOfSchema;

impl PartialSchema for AsOfSchema {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .description(Some("A log position (an integer >= 0) or an RFC 3339 date-time."))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^\+?[0-9]{1,18}$")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .into()
    }
}

impl ToSchema for AsOfSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AsOf")
    }
}

/// A bulk call's `as_of`: a position (a JSON integer, or as text) or an
/// RFC 3339 time.
pub struct BodyAsOfSchema;

impl PartialSchema for BodyAsOfSchema {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .description(Some(
                "A log position (an integer >= 0, or one as text) or an RFC 3339 date-time.",
            ))
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .item(AsOfSchema::schema())
            .into()
    }
}

impl ToSchema for BodyAsOfSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("BodyAsOf")
    }
}

/// A JSON Schema: an object or a boolean.
pub struct JsonSchemaDoc;

impl PartialSchema for JsonSchemaDoc {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .description(Some("A JSON Schema: an object or a boolean."))
            .item(ObjectBuilder::new().schema_type(Type::Object))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .into()
    }
}

impl ToSchema for JsonSchemaDoc {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JsonSchema")
    }
}

/// Any JSON but null.
pub struct NotNull;

impl PartialSchema for NotNull {
    fn schema() -> RefOr<Schema> {
        let mut any = AnyOfBuilder::new().description(Some("Any JSON value but null."));
        for t in [Type::Object, Type::Array, Type::String, Type::Number, Type::Boolean] {
            any = any.item(ObjectBuilder::new().schema_type(t));
        }
        any.into()
    }
}

impl ToSchema for NotNull {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NotNull")
    }
}

const PROBLEM: &str = "application/problem+json";

const IDEMPOTENCY: &str = "\n\nTakes an optional `Idempotency-Key` header (1–255 visible ASCII characters): \
the same key again from the same caller, with the same method, path and body, answers the first response \
again (marked `Idempotent-Replayed: true`) without appending anything; with another request it is 422 \
`idempotency_key_reused`, and while the first is still running 409 `idempotency_key_in_progress`.";

/// The served document: `openapi` with the shared responses, headers and
/// parameter formats added. JSON, because utoipa's model has no header
/// references and cannot read back a schema without a type (any JSON).
pub fn document(openapi: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(openapi).expect("the OpenAPI document serializes");
    complete(&mut doc);
    state_any_members(&mut doc);
    doc
}

/// Says what JSON Schema leaves implicit, which changes nothing for a
/// validator: an object with no `properties` takes any
/// (`additionalProperties: true`), an array with no `items` holds any
/// (`items: {}`). Generators read a missing one as none: openapi-typescript
/// types such an object `Record<string, never>`, openapi-python-client drops
/// a schema with such an array (tests/clients.rs generates both clients).
fn state_any_members(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is = |t: &str| match map.get("type") {
                Some(Value::String(s)) => s == t,
                Some(Value::Array(types)) => types.iter().any(|s| s == t),
                _ => false,
            };
            let (object, array) = (is("object"), is("array"));
            if object && !map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(true));
            }
            if array && !map.contains_key("items") && !map.contains_key("prefixItems") {
                map.insert("items".into(), json!({}));
            }
            for (key, member) in map.iter_mut() {
                // Values, not schemas.
                if !["example", "examples", "default", "enum", "const"].contains(&key.as_str()) {
                    state_any_members(member);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(state_any_members),
        _ => {}
    }
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema })
}

fn components() -> (Value, Value) {
    let headers = json!({
        "X-Request-Id": header(
            "The request's id: the client's `X-Request-Id`, or a new UUID. It is the `request_id` of every event the request appends.",
            json!({"type": "string"})),
        "X-RateLimit-Limit": header(
            "Requests the caller may make in a burst (per token; per client address when the API runs open).",
            json!({"type": "integer", "minimum": 1})),
        "X-RateLimit-Remaining": header(
            "Requests left in the current burst.",
            json!({"type": "integer", "minimum": 0})),
        "X-RateLimit-Reset": header(
            "The Unix time (seconds) at which the burst is full again.",
            json!({"type": "integer", "minimum": 0})),
        "Retry-After": header(
            "Seconds to wait before the next request is admitted.",
            json!({"type": "integer", "minimum": 1})),
        "WWW-Authenticate": header(
            "The bearer challenge (RFC 6750); for 403 it names the missing scope.",
            json!({"type": "string"})),
        "Idempotent-Replayed": header(
            "`true` when this is the stored response to an earlier request with the same `Idempotency-Key`.",
            json!({"type": "string", "enum": ["true"]})),
    });
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": { PROBLEM: { "schema": { "$ref": "#/components/schemas/Problem" } } },
        })
    };
    let mut responses = json!({
        "BadRequest": problem("Malformed request: the body is not JSON, or the query string or a path segment cannot be decoded (`malformed_request`)."),
        "Unauthorized": problem("No token, or one that is unknown or revoked (`unauthorized`)."),
        "Forbidden": problem("The token lacks the route's scope (`insufficient_scope`; `details` name `required_scope` and `token_scopes`), or a request signed in by cookie failed the CSRF check (`cross_site_request`)."),
        "NotFound": problem("No such run or operation (`run_not_found`, `operation_not_found`; `details` name `resource` and `id`)."),
        "Conflict": problem("A request with the same `Idempotency-Key` is still running (`idempotency_key_in_progress`)."),
        "PayloadTooLarge": problem("The body is larger than the server accepts (`payload_too_large`)."),
        "UnsupportedMediaType": problem("The body is not `application/json` (`unsupported_media_type`)."),
        "Invalid": problem("Invalid values, unknown parameters or fields (`validation_failed`, each fault in `errors` at its `location`), or an `Idempotency-Key` reused for a different request (`idempotency_key_reused`)."),
        "RateLimited": problem("Rate limited (`rate_limited`; `details` hold `retry_after`, `limit` and `window`)."),
        "Timeout": problem("The request took longer than the server allows (`timeout`)."),
        "Internal": problem("The server failed to handle the request (`internal_error`); the cause is in its log, never in the answer."),
    });
    for name in ["Unauthorized", "Forbidden"] {
        add_headers(&mut responses[name], &headers, &["WWW-Authenticate"]);
    }
    add_headers(&mut responses["RateLimited"], &headers, &["Retry-After"]);
    (headers, responses)
}

/// The shared responses of a route, by status: every route can time out;
/// `/api/` routes are behind auth and rate limits and read a query string
/// and path; POST routes read their body (an `Idempotency-Key` makes even a
/// body-less one read it) and take idempotency keys.
fn shared_statuses(path: &str, method: &str, reads_json: bool) -> Vec<(&'static str, &'static str)> {
    // Every route refuses a query parameter it does not read (and a query
    // that does not decode), and any can fail inside the server.
    let mut statuses = vec![("503", "Timeout"), ("500", "Internal"), ("422", "Invalid")];
    if path.starts_with("/api/") {
        statuses.extend([
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("403", "Forbidden"),
            ("429", "RateLimited"),
        ]);
    }
    if path.contains("{id}") {
        statuses.push(("404", "NotFound"));
    }
    if method == "post" && path.starts_with("/api/") {
        statuses.extend([("409", "Conflict"), ("413", "PayloadTooLarge")]);
    }
    if reads_json {
        statuses.extend([("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType")]);
    }
    statuses
}

/// One frame of an event stream.
fn sse_frame() -> Value {
    json!({
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": { "type": "string", "pattern": "^[0-9]+$", "description": "The event's position; send it back as `Last-Event-ID` to resume." },
            "event": { "$ref": "#/components/schemas/EventType" },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": { "$ref": "#/components/schemas/EventEnvelope" },
            },
        },
    })
}

fn complete(doc: &mut Value) {
    let (headers, responses) = components();
    let components = doc["components"].as_object_mut().expect("components");
    let mut responses = responses;
    for response in responses.as_object_mut().expect("responses").values_mut() {
        // The rate-limit headers are on every answer of an `/api/` route.
        add_headers(response, &headers, &["X-Request-Id"]);
        add_headers(response, &headers, &RATE_LIMIT);
    }
    components.insert("responses".into(), responses);
    let schemas = components.get("schemas").cloned().unwrap_or_default();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            if !["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                continue;
            }
            complete_operation(path, method, operation, &headers, &schemas);
        }
    }
    no_nul_in_strings(doc);
}

/// What no text field may hold: neither backend stores U+0000, so the
/// parsers refuse it (422) and the document says so.
const NO_NUL: &str = "^[^\\u0000]*$";

/// Gives every string schema under `schema` that states no shape of its own
/// (pattern, enum, const or format) the `NO_NUL` pattern, so a generated
/// client or fuzzer never sends what the parsers refuse.
fn no_nul_in_strings(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let is_string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            let shaped = ["pattern", "enum", "const", "format"]
                .iter()
                .any(|k| map.contains_key(*k));
            if is_string && !shaped {
                map.insert("pattern".into(), Value::String(NO_NUL.into()));
            }
            for value in map.values_mut() {
                no_nul_in_strings(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(no_nul_in_strings),
        _ => {}
    }
}

const RATE_LIMIT: [&str; 3] = ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"];

/// Documents the named headers (from `headers`) on `response`. Inline, so
/// that each response reads on its own.
fn add_headers(response: &mut Value, headers: &Value, names: &[&str]) {
    let Some(response) = response.as_object_mut() else {
        return;
    };
    let own = response.entry("headers").or_insert_with(|| Value::Object(Map::new()));
    for name in names {
        own[*name] = headers[*name].clone();
    }
}

fn complete_operation(path: &str, method: &str, operation: &mut Value, headers: &Value, schemas: &Value) {
    let api = path.starts_with("/api/");
    let reads_json = operation.get("requestBody").is_some();
    if let Some(body) = operation.get_mut("requestBody") {
        // An empty body counts as `{}`: it may be left out unless a field is required.
        let schema = body.pointer("/content/application~1json/schema");
        let component = schema
            .and_then(|s| s["$ref"].as_str())
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .and_then(|name| schemas.get(name));
        let needs_fields = component
            .or(schema)
            .and_then(|s| s["required"].as_array())
            .is_some_and(|r| !r.is_empty());
        body["required"] = Value::Bool(needs_fields);
    }
    let responses = operation["responses"].as_object_mut().expect("responses");
    for (status, component) in shared_statuses(path, method, reads_json) {
        match responses.get_mut(status) {
            None => {
                responses.insert(
                    status.into(),
                    json!({ "$ref": format!("#/components/responses/{component}") }),
                );
            }
            // A route's own description of the status stays; the problem
            // body is added where the route documents another one (readiness).
            Some(own) => {
                let content = own["content"].as_object_mut();
                if let Some(content) = content {
                    content
                        .entry(PROBLEM)
                        .or_insert_with(|| json!({ "schema": { "$ref": "#/components/schemas/Problem" } }));
                }
            }
        }
    }
    for (_, response) in responses.iter_mut() {
        if response.get("$ref").is_some() {
            continue;
        }
        if let Some(stream) = response.pointer_mut("/content/text~1event-stream") {
            // Before OpenAPI 3.2 (and its `itemSchema`), the `schema` of an
            // event stream describes each event.
            stream["schema"] = sse_frame();
        }
        let mut names = vec!["X-Request-Id"];
        if api {
            names.extend(RATE_LIMIT);
        }
        if api && method == "post" {
            names.push("Idempotent-Replayed");
        }
        add_headers(response, headers, &names);
    }
    if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for parameter in parameters.iter_mut() {
            if parameter["in"] == "query" && parameter["required"] != true {
                // An empty value of an optional parameter means it was not
                // given (`extract::QueryParams::many`), whatever its schema.
                // `const`, not `maxLength: 0`: generators type that as any
                // string, which would hide the parameter's own type.
                if let Some(schema) = parameter.get_mut("schema") {
                    let given = schema.take();
                    *schema = json!({ "anyOf": [given, { "type": "string", "const": "" }] });
                }
                continue;
            }
            if parameter["in"] != "path" {
                continue;
            }
            // Every `{id}` is a run or operation id; `extract::Faults::path_id` refuses anything else.
            match parameter["name"].as_str() {
                Some("id") => parameter["schema"] = json!({ "type": "string", "format": "uuid" }),
                Some("taskName") => {
                    parameter["schema"] = json!({ "type": "string", "pattern": crate::domain::TASK_NAME_PATTERN })
                }
                _ => {}
            }
        }
    }
    if api && method == "post" {
        // Not a documented parameter: a fuzzer that sends one key with
        // different bodies would only meet `idempotency_key_reused`.
        let description = operation["description"].as_str().unwrap_or_default().to_owned();
        operation["description"] = Value::String(format!("{description}{IDEMPOTENCY}").trim_start().to_owned());
    }
}
