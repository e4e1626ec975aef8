//! The MCP criteria: `mcp_tool` (Pomerium's) and `mcp_tool_argument` (Vallum's), evaluated on
//! one JSON-RPC message of a request to an MCP route. Both are false for anything but a
//! `tools/call` (as in Pomerium since v0.31), so `deny: {mcp_tool: {not_in: [...]}}` leaves the
//! protocol's own messages (`initialize`, `tools/list`, …) alone.

use super::matchers::StringMatcher;
use super::Tri;
use serde_json::{Map, Value};

/// What the policy sees of one JSON-RPC message.
#[derive(Debug, Clone, Copy)]
pub struct McpInput<'a> {
    pub method: &'a str,
    /// `params.name` of a `tools/call`.
    pub tool: Option<&'a str>,
    pub arguments: Arguments<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum Arguments<'a> {
    /// `params.arguments` of a `tools/call` (`None`: it has none).
    Known(Option<&'a Map<String, Value>>),
    /// Deciding whether to list a tool (`tools/list`): no call, no arguments yet. An argument
    /// criterion is then unknown, and the tool is listed if some arguments could be allowed.
    Unknown,
}

fn call<'a>(m: Option<&McpInput<'a>>) -> Option<&'a str> {
    let m = m?;
    (m.method == "tools/call").then_some(m.tool).flatten()
}

pub(super) fn tool(m: Option<&McpInput<'_>>, matcher: &StringMatcher) -> Tri {
    Tri::from(call(m).is_some_and(|t| matcher.matches(t)))
}

pub(super) fn argument(m: Option<&McpInput<'_>>, name: &str, matcher: &StringMatcher) -> Tri {
    let Some(input) = m.filter(|_| call(m).is_some()) else {
        return Tri::False;
    };
    match input.arguments {
        Arguments::Unknown => Tri::Unknown,
        Arguments::Known(args) => Tri::from(
            args.and_then(|a| a.get(name))
                .is_some_and(|v| matcher.matches(&text(v))),
        ),
    }
}

/// An argument's value as the matchers see it: a string as itself, anything else as JSON.
fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// One JSON-RPC message of a request body, as read from the wire.
#[derive(Debug, Clone)]
pub struct McpMessage {
    /// The request id (absent for notifications), echoed in any error about it.
    pub id: Option<Value>,
    pub method: String,
    pub tool: Option<String>,
    pub arguments: Option<Map<String, Value>>,
}

impl McpMessage {
    pub fn input(&self) -> McpInput<'_> {
        McpInput {
            method: &self.method,
            tool: self.tool.as_deref(),
            arguments: Arguments::Known(self.arguments.as_ref()),
        }
    }
}

/// A request body: one message or a batch.
#[derive(Debug, Clone)]
pub struct McpRequest {
    pub batch: bool,
    pub messages: Vec<McpMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpParseError {
    /// Not JSON at all (JSON-RPC's -32700).
    #[error("parse error: {0}")]
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 request, notification or response (-32600).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

/// Parses a Streamable HTTP POST body: one JSON-RPC message or a non-empty batch of them.
/// Responses a client sends back (to a server's request) carry no method and are kept as
/// such (method empty): the MCP criteria are false for them.
pub fn parse(body: &[u8]) -> Result<McpRequest, McpParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| McpParseError::Parse(e.to_string()))?;
    match v {
        Value::Array(items) if items.is_empty() => Err(McpParseError::Invalid("empty batch")),
        Value::Array(items) => Ok(McpRequest {
            batch: true,
            messages: items.iter().map(message).collect::<Result<_, _>>()?,
        }),
        other => Ok(McpRequest {
            batch: false,
            messages: vec![message(&other)?],
        }),
    }
}

fn message(v: &Value) -> Result<McpMessage, McpParseError> {
    let Value::Object(o) = v else {
        return Err(McpParseError::Invalid("a message must be a JSON object"));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(McpParseError::Invalid("jsonrpc must be \"2.0\""));
    }
    let id = o.get("id").cloned();
    if id
        .as_ref()
        .is_some_and(|i| !matches!(i, Value::String(_) | Value::Number(_)))
    {
        return Err(McpParseError::Invalid("id must be a string or a number"));
    }
    let method = match o.get("method") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(McpParseError::Invalid("method must be a string")),
        // A response the client sends to the server's request.
        None if o.contains_key("result") || o.contains_key("error") => String::new(),
        None => return Err(McpParseError::Invalid("a request needs a method")),
    };
    let params = o.get("params").and_then(Value::as_object);
    let (tool, arguments) = match method.as_str() {
        "tools/call" => {
            let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
                return Err(McpParseError::Invalid("tools/call needs params.name"));
            };
            let args = match params.and_then(|p| p.get("arguments")) {
                None | Some(Value::Null) => None,
                Some(Value::Object(a)) => Some(a.clone()),
                Some(_) => {
                    return Err(McpParseError::Invalid(
                        "tools/call arguments must be an object",
                    ))
                }
            };
            (Some(name.to_string()), args)
        }
        _ => (None, None),
    };
    Ok(McpMessage {
        id,
        method,
        tool,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_batches_and_bad_bodies() {
        let one = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read","arguments":{"path":"/a","n":3}}}"#).unwrap();
        assert!(!one.batch);
        let m = &one.messages[0];
        assert_eq!(
            (m.method.as_str(), m.tool.as_deref()),
            ("tools/call", Some("read"))
        );
        assert_eq!(m.arguments.as_ref().unwrap()["n"], 3);
        let batch = parse(br#"[{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#).unwrap();
        assert!(batch.batch);
        assert_eq!(batch.messages.len(), 2);
        assert!(batch.messages[1].id.is_none());
        for (body, parse_error) in [
            (&b"{"[..], true),
            (b"[]", false),
            (br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, false),
            (br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#, false),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#, false),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#, false),
            (b"42", false),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(matches!(e, McpParseError::Parse(_)), parse_error, "{e}");
        }
    }

    #[test]
    fn tool_criteria_hold_only_for_tool_calls() {
        let m = |method: &str, tool: Option<&str>| McpMessage {
            id: None,
            method: method.into(),
            tool: tool.map(str::to_string),
            arguments: serde_json::json!({"path": "/srv/public/a", "n": 3})
                .as_object()
                .cloned(),
        };
        let is = |s: &str| StringMatcher::Is(s.into());
        let call = m("tools/call", Some("read"));
        let list = m("tools/list", None);
        assert_eq!(tool(Some(&call.input()), &is("read")), Tri::True);
        assert_eq!(tool(Some(&call.input()), &is("write")), Tri::False);
        assert_eq!(
            tool(Some(&list.input()), &StringMatcher::Not(Box::new(is("x")))),
            Tri::False
        );
        assert_eq!(tool(None, &is("read")), Tri::False);
        let prefix = StringMatcher::StartsWith("/srv/public/".into());
        assert_eq!(argument(Some(&call.input()), "path", &prefix), Tri::True);
        assert_eq!(
            argument(Some(&call.input()), "n", &is("3")),
            Tri::True,
            "numbers as JSON"
        );
        assert_eq!(
            argument(Some(&call.input()), "missing", &prefix),
            Tri::False
        );
        let unknown = McpInput {
            arguments: Arguments::Unknown,
            ..call.input()
        };
        assert_eq!(argument(Some(&unknown), "path", &prefix), Tri::Unknown);
    }
}
