//! Refusals on MCP routes in the protocol's own terms: JSON-RPC error objects carrying the
//! request id, so an agent's MCP client reports "this call was refused, because …" instead of
//! a transport failure. A policy refusal is an HTTP 200 whose body is the JSON-RPC error (what
//! MCP clients read as the call's answer); a body that is not JSON-RPC is a 400, one over
//! `max_request_bytes` a 413, each with the error object as its body.

use super::reply::Reply;
use http::StatusCode;
use serde_json::{json, Value};

/// JSON-RPC's code for a body that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// Vallum's code for a call its policy refuses (the implementation-defined server range).
pub const FORBIDDEN: i64 = -32001;
/// Vallum's code for a call left unanswered because another call of its batch was refused.
pub const BATCH_REFUSED: i64 = -32002;
/// Vallum's code for a body over the route's `max_request_bytes`.
pub const TOO_LARGE: i64 = -32003;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpError {
    /// The id of the message it answers (`null` when it could not be read).
    pub id: Value,
    pub code: i64,
    pub message: String,
    /// Pomerium's reason strings, in `error.data.reasons`.
    pub reasons: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRefusal {
    pub status: StatusCode,
    /// Answer with an array (the request was a batch).
    pub batch: bool,
    pub errors: Vec<McpError>,
}

impl McpRefusal {
    /// One error about the whole body (unreadable, invalid, too large).
    pub fn whole(status: StatusCode, code: i64, message: impl Into<String>) -> McpRefusal {
        McpRefusal {
            status,
            batch: false,
            errors: vec![McpError {
                id: Value::Null,
                code,
                message: message.into(),
                reasons: Vec::new(),
            }],
        }
    }
}

pub fn reply(r: &McpRefusal, request_id: &str) -> Reply {
    let objects: Vec<Value> = r
        .errors
        .iter()
        .map(|e| {
            json!({
                "jsonrpc": "2.0",
                "id": e.id,
                "error": {
                    "code": e.code,
                    "message": e.message,
                    "data": {"reasons": e.reasons, "request_id": request_id},
                },
            })
        })
        .collect();
    let body = match (r.batch, objects.len()) {
        (false, 1) => objects.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(objects),
    };
    Reply::json(r.status, &body)
}
