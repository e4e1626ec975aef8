//! `tools/list` on an MCP route answers only the tools the caller may call: each tool in the
//! server's answer is put to the route's policy as a `tools/call` of it (with its arguments
//! unknown, so a tool allowed for some arguments stays listed) and dropped when refused. Works on
//! a JSON answer (buffered, at most `MAX_LIST_BYTES`) and on an event stream (event by event).

use super::access::{self, Asking};
use super::RequestCtx;
use crate::policy::mcp::{Arguments, McpInput};
use crate::policy::{Decision, Input};
use crate::routes::route::Access;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde_json::Value;

/// Largest `tools/list` answer held to be filtered.
const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;

/// A `tools/list` request whose answer is being filtered.
#[derive(Debug)]
pub struct ToolsList {
    /// The request's id: the answer to filter carries it.
    id: Value,
    mode: Mode,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Not known yet (before the response head).
    Pending,
    Json,
    Events,
}

impl ToolsList {
    pub fn new(id: Value) -> ToolsList {
        ToolsList {
            id,
            mode: Mode::Pending,
            buf: Vec::new(),
        }
    }
}

/// Chooses how to filter from the response head; the length changes, so it is dropped.
pub fn head(resp: &mut ResponseHeader, ctx: &mut RequestCtx) {
    let Some(list) = ctx.mcp_list.as_mut() else {
        return;
    };
    let ctype = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    list.mode = match (resp.status.as_u16(), ctype) {
        (200, c) if c.starts_with("application/json") => Mode::Json,
        (200, c) if c.starts_with("text/event-stream") => Mode::Events,
        _ => {
            ctx.mcp_list = None;
            return;
        }
    };
    resp.remove_header(&http::header::CONTENT_LENGTH);
}

/// Filters the body as it passes.
pub fn body(session: &Session, body: &mut Option<Bytes>, end: bool, ctx: &mut RequestCtx) {
    let Some(mut list) = ctx.mcp_list.take() else {
        return;
    };
    if let Some(chunk) = body.take() {
        list.buf.extend_from_slice(&chunk);
    }
    let out = match list.mode {
        Mode::Json if end => Some(with_policy(session, ctx, |allowed| {
            json_answer(&list.buf, &list.id, allowed)
        })),
        Mode::Json if list.buf.len() > MAX_LIST_BYTES => {
            tracing::warn!(request_id = %ctx.request_id, "tools/list answer too large to filter; refused");
            Some(too_large(&list.id))
        }
        Mode::Json | Mode::Pending => None,
        Mode::Events => Some(with_policy(session, ctx, |allowed| {
            events(&mut list.buf, end, &list.id, allowed)
        })),
    };
    *body = out.map(Bytes::from);
    let done = end || (list.mode == Mode::Json && body.is_some());
    if !done {
        ctx.mcp_list = Some(list);
    }
}

/// Runs `f` with the test of whether the route's policy could allow this caller a call of a
/// tool (its arguments unknown). The request's policy input is built once, for every tool.
fn with_policy<R>(
    session: &Session,
    ctx: &RequestCtx,
    f: impl FnOnce(&dyn Fn(&str) -> bool) -> R,
) -> R {
    let Some(route) = ctx.route.as_deref() else {
        return f(&|_| false);
    };
    let Access::Policy(policy) = &route.access else {
        return f(&|_| true);
    };
    let path = ctx.target.as_ref().map_or("/", |t| t.path.as_str());
    let identity = ctx.identity.as_deref();
    access::with_input(
        &Asking::of(session),
        ctx.client_ip,
        route,
        identity,
        path,
        |base| {
            f(&|tool: &str| {
                let input = Input {
                    mcp: Some(McpInput {
                        method: "tools/call",
                        tool: Some(tool),
                        arguments: Arguments::Unknown,
                    }),
                    ..*base
                };
                !matches!(policy.evaluate(&input), Decision::Deny { .. })
            })
        },
    )
}

/// The JSON answer with its refused tools dropped (unchanged when it is not the list's answer).
fn json_answer(buf: &[u8], id: &Value, allowed: &dyn Fn(&str) -> bool) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(buf) else {
        return buf.to_vec();
    };
    match filter(&mut v, id, allowed) {
        true => v.to_string().into_bytes(),
        false => buf.to_vec(),
    }
}

/// Drops the refused tools from `v` if it is the answer to request `id`; whether it was.
fn filter(v: &mut Value, id: &Value, allowed: &dyn Fn(&str) -> bool) -> bool {
    if v.get("id") != Some(id) {
        return false;
    }
    let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) else {
        return false;
    };
    tools.retain(|t| t.get("name").and_then(Value::as_str).is_some_and(allowed));
    true
}

/// The complete events in `buf` (taken out of it), with the list's answer filtered; at the
/// end, whatever is left too.
fn events(buf: &mut Vec<u8>, end: bool, id: &Value, allowed: &dyn Fn(&str) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(at) = find_event_end(buf) {
        let event: Vec<u8> = buf.drain(..at).collect();
        out.extend_from_slice(&event_filtered(&event, id, allowed));
    }
    if end {
        out.append(buf);
    }
    out
}

/// The end (exclusive, separator included) of the first complete event.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One event, its `data` rewritten when it is the list's answer.
fn event_filtered(event: &[u8], id: &Value, allowed: &dyn Fn(&str) -> bool) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(event) else {
        return event.to_vec();
    };
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n");
    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
        return event.to_vec();
    };
    if !filter(&mut v, id, allowed) {
        return event.to_vec();
    }
    let mut out = String::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("data:"))
    {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
    out.into_bytes()
}

fn too_large(id: &Value) -> Vec<u8> {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": crate::respond::mcp::TOO_LARGE, "message": "the tool list is too large to filter"},
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only_read(t: &str) -> bool {
        t.starts_with("read")
    }

    #[test]
    fn json_and_event_stream_answers_are_filtered() {
        let id = json!(3);
        let answer = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "read_file"}, {"name": "delete"}, {"name": "read_dir"}]}});
        let out: Value =
            serde_json::from_slice(&json_answer(answer.to_string().as_bytes(), &id, &only_read))
                .unwrap();
        let names: Vec<&str> = out["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["read_file", "read_dir"]);
        // Another id, or not JSON: unchanged.
        let other = json!({"jsonrpc": "2.0", "id": 4, "result": {"tools": [{"name": "delete"}]}})
            .to_string();
        assert_eq!(
            json_answer(other.as_bytes(), &id, &only_read),
            other.as_bytes()
        );
        assert_eq!(json_answer(b"nope", &id, &only_read), b"nope");

        let stream =
            format!("event: message\nid: 1\ndata: {answer}\n\n: keep-alive\n\ndata: {other}\n\n");
        let mut buf = Vec::new();
        let mut out = Vec::new();
        // Arrives in small pieces: events are cut only where they end.
        for piece in stream.as_bytes().chunks(7) {
            buf.extend_from_slice(piece);
            out.extend(events(&mut buf, false, &id, &only_read));
        }
        out.extend(events(&mut buf, true, &id, &only_read));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message\nid: 1\ndata: {"), "{text}");
        assert!(
            !text.split("\n\n").next().unwrap().contains("delete"),
            "{text}"
        );
        assert!(text.contains(": keep-alive\n\n"), "{text}");
        assert!(text.ends_with(&format!("data: {other}\n\n")), "{text}");
    }
}
