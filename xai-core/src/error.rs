//! The one error type of the request path. The respond layer renders it in the client's protocol.

use std::time::Duration;

use http::StatusCode;

/// Boxed error for bodies and transports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a failure came from: decides blame in logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something wrong or is not allowed.
    Client,
    /// The gateway itself.
    Gateway,
    /// An upstream provider.
    Upstream,
}

/// Every way a gateway request can fail. Messages are safe to show to the caller: they never hold secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No credential, or one that matches no active key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated but not allowed (status, IP, resource, model, level).
    #[error("{message}")]
    Forbidden {
        /// Stable machine code (`model_not_allowed`, `account_disabled`, …).
        code: &'static str,
        /// Human explanation naming the account that refused.
        message: String,
    },
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Body over the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Unknown path.
    #[error("no route for {0}")]
    NotFound(String),
    /// No provider serves the model (after mapping).
    #[error("model {0:?} is not served by any provider")]
    ModelNotFound(String),
    /// A limit refused the request.
    #[error("{message}")]
    RateLimited {
        /// Which bound and which account.
        message: String,
        /// When to try again.
        retry_after: Option<Duration>,
        /// The request or token bound that refused (for `x-ratelimit-*` headers); `None` for credits.
        bound: Option<RateBound>,
    },
    /// Every usable upstream key was tried or is cooling down.
    #[error("{message}")]
    UpstreamUnavailable {
        /// What happened, without upstream secrets.
        message: String,
        /// The status the last attempt saw, when any.
        last_status: Option<StatusCode>,
        /// When keys come back, when known.
        retry_after: Option<Duration>,
    },
    /// The overall deadline passed.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Known endpoint not served yet in this configuration.
    #[error("{0}")]
    NotImplemented(String),
    /// Bug or broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
    /// An upstream refused the request itself (a 4xx that is not the key's fault), in another protocol than
    /// the client's: its status and message, re-rendered in the client's protocol.
    #[error("{message}")]
    UpstreamRejected {
        /// The upstream status.
        status: StatusCode,
        /// The upstream's message.
        message: String,
    },
}

/// The bound behind a [`GatewayError::RateLimited`]: what it counts and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateBound {
    /// Requests (rpm, rpd).
    Requests(u64),
    /// Tokens (tpm, tpd).
    Tokens(u64),
}

impl GatewayError {
    /// Convenience for [`GatewayError::Forbidden`].
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        GatewayError::Forbidden { code, message: message.into() }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::NotFound(_) | GatewayError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::UpstreamUnavailable { last_status, .. } => match last_status {
                Some(s) if *s == StatusCode::TOO_MANY_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::UpstreamRejected { status, .. } => *status,
        }
    }

    /// Short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized(_) => "unauthorized",
            GatewayError::Forbidden { code, .. } => code,
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::Timeout(_) => "timeout",
            GatewayError::NotImplemented(_) => "not_implemented",
            GatewayError::Internal(_) => "internal",
            GatewayError::UpstreamRejected { .. } => "upstream_rejected",
        }
    }

    /// Who is to blame.
    pub fn origin(&self) -> Origin {
        match self {
            GatewayError::UpstreamUnavailable { .. } | GatewayError::Timeout(_) => Origin::Upstream,
            GatewayError::UpstreamRejected { status, .. } if !status.is_client_error() => Origin::Upstream,
            GatewayError::Internal(_) | GatewayError::NotImplemented(_) => Origin::Gateway,
            _ => Origin::Client,
        }
    }

    /// Whether a client may usefully retry the same request later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::RateLimited { .. } | GatewayError::UpstreamUnavailable { .. } | GatewayError::Timeout(_)
        )
    }

    /// `retry-after` to send, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { retry_after, .. } | GatewayError::UpstreamUnavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(GatewayError::Unauthorized("x").status(), 401);
        assert_eq!(GatewayError::forbidden("model_not_allowed", "no").status(), 403);
        assert_eq!(GatewayError::PayloadTooLarge { limit: 1 }.status(), 413);
        let all429 = GatewayError::UpstreamUnavailable {
            message: "m".into(),
            last_status: Some(StatusCode::TOO_MANY_REQUESTS),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(all429.status(), 429);
        assert!(all429.is_retryable());
        assert_eq!(all429.retry_after(), Some(Duration::from_secs(3)));
        assert!(!GatewayError::BadRequest("b".into()).is_retryable());
    }
}
