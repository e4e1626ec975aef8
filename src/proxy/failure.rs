//! When proxying fails after `request_filter` let the request through: which refusal the client
//! sees, if any (a client that went away gets nothing).

use crate::respond::refusal::{Refusal, UpstreamFault};
use pingora_core::{ErrorSource, ErrorType};

/// `None`: the downstream connection is gone, so there is no one to answer.
pub fn classify(etype: &ErrorType, source: &ErrorSource) -> Option<Refusal> {
    use ErrorType::*;
    let fault = match etype {
        HTTPStatus(c) => UpstreamFault::Status(*c),
        ConnectTimedout | ReadTimedout | WriteTimedout if source == &ErrorSource::Upstream => {
            UpstreamFault::Timeout
        }
        _ => match source {
            ErrorSource::Upstream => UpstreamFault::Unreachable,
            ErrorSource::Downstream => match etype {
                WriteError | ReadError | ConnectionClosed => return None,
                ReadTimedout => UpstreamFault::ClientTimeout,
                _ => UpstreamFault::Status(400),
            },
            ErrorSource::Internal | ErrorSource::Unset => UpstreamFault::Status(500),
        },
    };
    Some(Refusal::Upstream(fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(t: ErrorType, s: ErrorSource) -> Option<u16> {
        classify(&t, &s).map(|r| r.status().as_u16())
    }

    #[test]
    fn failures_map_to_statuses() {
        assert_eq!(
            status(ErrorType::ConnectRefused, ErrorSource::Upstream),
            Some(502)
        );
        assert_eq!(
            status(ErrorType::ReadTimedout, ErrorSource::Upstream),
            Some(504)
        );
        assert_eq!(
            status(ErrorType::ReadTimedout, ErrorSource::Downstream),
            Some(408)
        );
        assert_eq!(
            status(ErrorType::HTTPStatus(413), ErrorSource::Downstream),
            Some(413)
        );
        assert_eq!(
            status(ErrorType::ConnectionClosed, ErrorSource::Downstream),
            None
        );
        assert_eq!(
            status(ErrorType::InternalError, ErrorSource::Internal),
            Some(500)
        );
        assert_eq!(
            status(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream),
            Some(400)
        );
    }
}
