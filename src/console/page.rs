//! HTML building blocks: escaping, the page frame, statuses, times, tables.
//! Pages are `format!` over escaped text: every value from the ledger goes
//! through [`esc`] (or [`attr`]) on its way into the markup.

use std::fmt::Write;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::http::error::Finished;

/// Text for an element's content or a quoted attribute.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn attr(text: &str) -> String {
    esc(text)
}

/// A query string (with its `?`) of `pairs`, or nothing when empty.
pub fn query(pairs: &[(String, String)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

/// `pairs` with `name` set to `value` (or removed when `None`).
pub fn with(pairs: &[(String, String)], changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(name, _)| name == k))
        .cloned()
        .collect();
    for (name, value) in changes {
        if let Some(v) = value {
            out.push(((*name).to_owned(), (*v).to_owned()));
        }
    }
    out
}

pub fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A run's status as words and a symbol, never colour alone.
pub fn status(run: &Value) -> String {
    let phase = run["status"].as_str().unwrap_or("unknown");
    let reason = run["end_reason"].as_str();
    let (symbol, label) = match (phase, reason) {
        ("ended", Some("success")) => ("✔", "success".to_owned()),
        ("ended", Some(r @ ("failed" | "timeout" | "crashed" | "log_overflow"))) => ("✖", r.to_owned()),
        ("ended", Some(r)) => ("■", r.to_owned()),
        ("running", _) => ("▶", "running".to_owned()),
        ("paused", _) => ("❚❚", "paused".to_owned()),
        ("pending", _) => ("○", "pending".to_owned()),
        (p, _) => ("?", p.to_owned()),
    };
    let mut extra = String::new();
    if run["dead_lettered"] == Value::Bool(true) {
        extra.push_str(r#" <span class="flag">dead letter</span>"#);
    }
    if run["deleted"] == Value::Bool(true) {
        extra.push_str(r#" <span class="flag">deleted</span>"#);
    }
    format!(
        r#"<span class="status s-{}" data-status="{}"><span aria-hidden="true">{symbol}</span> {}</span>{extra}"#,
        attr(&label),
        attr(&label),
        esc(&label)
    )
}

/// A time: UTC in the markup and on hover; the script shows it in the
/// viewer's zone.
pub fn time(v: &Value) -> String {
    match v.as_str() {
        Some(t) => format!(r#"<time datetime="{0}" title="{0}">{0}</time>"#, attr(t)),
        None => String::new(),
    }
}

pub fn run_link(id: &str, label: &str) -> String {
    format!(r#"<a href="/runs/{}">{}</a>"#, attr(id), esc(label))
}

/// A table of JSON records, one column per key of `columns` (every key of
/// the first record when empty); nested values as compact JSON.
pub fn records(items: &[Value], columns: &[&str]) -> String {
    if items.is_empty() {
        return r#"<p class="empty">None.</p>"#.to_owned();
    }
    let keys: Vec<String> = if columns.is_empty() {
        items[0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        columns.iter().map(|c| (*c).to_owned()).collect()
    };
    let mut html = String::from(r#"<div class="scroll"><table><thead><tr>"#);
    for k in &keys {
        let _ = write!(html, "<th scope=col>{}</th>", esc(k));
    }
    html.push_str("</tr></thead><tbody>");
    for item in items {
        html.push_str("<tr>");
        for k in &keys {
            let v = &item[k.as_str()];
            let cell = if k.ends_with("_at") || k == "recorded_at" {
                time(v)
            } else {
                let mut t = text_of(v);
                if t.len() > 300 {
                    let cut = (0..=300).rev().find(|i| t.is_char_boundary(*i)).unwrap_or(0);
                    t.truncate(cut);
                    t.push('…');
                }
                format!("<code>{}</code>", esc(&t))
            };
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
}

/// Who is looking: shown in the header, with a sign-out button when signed
/// in by cookie.
pub struct Viewer {
    pub actor: String,
    pub by_cookie: bool,
    pub open: bool,
}

/// The page frame. `live` names the stream the page follows (none when it
/// is a view of the past).
pub fn frame(title: &str, viewer: Option<&Viewer>, live: Option<&str>, body: &str) -> String {
    let who = match viewer {
        Some(v) if v.open => r#"<span class="who">open API (no tokens)</span>"#.to_owned(),
        Some(v) if v.by_cookie => format!(
            r#"<span class="who">signed in as <strong>{}</strong></span> <button type="button" id="sign-out">Sign out</button>"#,
            esc(&v.actor)
        ),
        Some(v) => format!(r#"<span class="who">{}</span>"#, esc(&v.actor)),
        None => String::new(),
    };
    let live_attr = live.map(|l| format!(r#" data-live="{}""#, attr(l))).unwrap_or_default();
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · runledger</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body{live_attr}>
<a class="skip" href="#main">Skip to content</a>
<header>
<nav aria-label="Console"><a href="/" class="brand" accesskey="r">runledger</a> <a href="/">Runs</a> <a href="/diff">Diff</a> <a href="/docs/">API</a></nav>
<div class="right"><span id="live-state" role="status" aria-live="polite"></span> {who}</div>
</header>
<main id="main" tabindex="-1">
{body}
</main>
</body>
</html>
"##,
        title = esc(title),
    )
}

/// An HTML answer that the API's problem rendering leaves alone.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    guard(&mut response);
    response
}

/// What the browser may do with a console answer: load and talk to this
/// server only, never be framed, never sniff a type.
pub fn guard(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response.extensions_mut().insert(Finished);
}

/// A page that says what is wrong, each fault at its location.
pub fn error(status: StatusCode, title: &str, detail: &str, faults: &[(String, String)]) -> Response {
    let mut list = String::new();
    if !faults.is_empty() {
        list.push_str(r#"<ul class="faults">"#);
        for (location, message) in faults {
            let _ = write!(list, "<li><code>{}</code>: {}</li>", esc(location), esc(message));
        }
        list.push_str("</ul>");
    }
    let body = format!(
        r#"<h1>{}</h1><p role="alert">{}</p>{list}<p><a href="/">Back to all runs</a></p>"#,
        esc(title),
        esc(detail)
    );
    respond(status, frame(title, None, None, &body))
}

/// The sign-in form: the token goes to `POST /api/session` once, as a
/// bearer header, and is never stored by the page.
pub fn sign_in(detail: &str) -> Response {
    let body = format!(
        r#"<h1>Sign in</h1>
<p>{}</p>
<form id="sign-in" class="card">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus placeholder="rl_…">
<button type="submit">Sign in</button>
<p id="sign-in-error" role="alert" class="error"></p>
</form>
<p class="hint">Create one with <code>runledger token create --name you --scopes runs:read,ledger:read</code>. The browser keeps an HttpOnly session cookie, not the token.</p>"#,
        esc(detail)
    );
    respond(StatusCode::UNAUTHORIZED, frame("Sign in", None, None, &body))
}
