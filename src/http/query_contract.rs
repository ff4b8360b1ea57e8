//! Every route reads or refuses its whole query string. The query parameters
//! a route reads are the ones its operation documents in the OpenAPI
//! document, so the document is the one list: a parameter it does not name
//! is refused with 422 at `query.<name>` on every route and method, before
//! the handler runs (a `POST /api/runs/bulk/cancel?project=x` must never
//! act on every project because the handler reads no query).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::{ApiError, FieldError};

/// The query parameter names of each operation, by method and route template.
#[derive(Debug, Default)]
pub struct QueryContract {
    routes: HashMap<(Method, String), HashSet<String>>,
    /// The documented route templates, whatever their methods.
    paths: HashSet<String>,
}

impl QueryContract {
    /// From the served document: each operation's `in: query` parameters.
    pub fn from_openapi(openapi: &Value) -> Self {
        let mut routes = HashMap::new();
        let mut documented = HashSet::new();
        let paths = openapi.get("paths").and_then(Value::as_object);
        for (path, item) in paths.into_iter().flatten() {
            documented.insert(path.clone());
            for (method, operation) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let names = operation
                    .get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
                    .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                routes.insert((method, path.clone()), names);
            }
        }
        Self {
            routes,
            paths: documented,
        }
    }

    /// The names of `query` that the route does not read.
    fn unread(&self, method: &Method, route: &str, query: &[(String, String)]) -> Vec<FieldError> {
        // HEAD is answered by the GET handler.
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        let known = self.routes.get(&(method, route.to_owned()));
        if known.is_none() && self.paths.contains(route) {
            // A method the route does not have: the router answers 405, and
            // the query string of a call that is refused anyway is no fault.
            return Vec::new();
        }
        query
            .iter()
            .filter(|(name, _)| !known.is_some_and(|k| k.contains(name)))
            .map(|(name, value)| FieldError {
                location: format!("query.{name}"),
                message: "is not a parameter of this route".to_owned(),
                value: Some(Value::String(value.clone())),
            })
            .collect()
    }
}

/// Refuses a request whose query string names a parameter its route does
/// not read. Runs after routing (it needs the route template).
pub async fn guard(State(contract): State<Arc<QueryContract>>, request: Request, next: Next) -> Response {
    let Some(query) = request.uri().query().filter(|q| !q.is_empty()) else {
        return next.run(request).await;
    };
    let pairs = match super::extract::decode_query(query) {
        Ok(pairs) => pairs,
        Err(e) => return e.into_response(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let unread = contract.unread(request.method(), &route, &pairs);
    if unread.is_empty() {
        next.run(request).await
    } else {
        ApiError::invalid(unread).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documented_query_parameters_are_read() {
        let doc = serde_json::json!({"paths": {"/api/runs/{id}": {
            "get": {"parameters": [{"name": "limit", "in": "query"}, {"name": "id", "in": "path"}]},
            "post": {},
        }}});
        let contract = QueryContract::from_openapi(&doc);
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let route = "/api/runs/{id}";
        assert!(contract.unread(&Method::GET, route, &q(&[("limit", "5")])).is_empty());
        assert!(contract.unread(&Method::HEAD, route, &q(&[("limit", "5")])).is_empty());
        let refused = contract.unread(&Method::POST, route, &q(&[("limit", "5")]));
        assert_eq!(refused[0].location, "query.limit");
        // A path parameter is not a query parameter.
        assert_eq!(contract.unread(&Method::GET, route, &q(&[("id", "x")])).len(), 1);
        // A method the route lacks is left to the router's 405.
        assert!(contract
            .unread(&Method::DELETE, route, &q(&[("limit", "5")]))
            .is_empty());
        // A route the document does not know reads no query.
        assert_eq!(contract.unread(&Method::GET, "/elsewhere", &q(&[("a", "")])).len(), 1);
    }
}
