//! RFC 9457 problem details: every error the API answers is
//! `application/problem+json`, naming fields but never echoing patient data.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use frontdoor_actors::event::FieldError;
use serde::Serialize;

/// The problem+json body.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short, human title of the type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// This occurrence, in words (no PHI).
    pub detail: String,
    /// The fields at fault, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Every error an HTTP handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; `errors` names each field.
    #[error("{detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The event cannot be processed (valid but unusable).
    #[error("{0}")]
    Unprocessable(String),
    /// Valid but unusable, naming the field at fault (an unknown intent).
    #[error("{detail}")]
    UnprocessableField { detail: String, field: String },
    /// The resource is not in a state that allows this (a callback for a contact that
    /// is not waiting).
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the store) is down; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// No token, or a token nobody holds.
    #[error("{0}")]
    Unauthorized(String),
    /// A known principal that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Over the rate limit; retry after this many seconds.
    #[error("too many requests; retry in {0} s")]
    TooManyRequests(u64),
}

impl ApiError {
    /// A validation problem for one field.
    pub fn field(field: &str, reason: &str) -> ApiError {
        ApiError::Invalid {
            detail: format!("{field} {reason}"),
            errors: vec![FieldError {
                field: field.to_string(),
                reason: reason.to_string(),
            }],
        }
    }

    fn slug(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Invalid { .. } => ("invalid-request", "The request is invalid"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::Unprocessable(_) => ("unprocessable", "The event cannot be processed"),
            ApiError::UnprocessableField { .. } => {
                ("unprocessable", "The request cannot be processed")
            }
            ApiError::Conflict(_) => ("conflict", "Conflict with the current state"),
            ApiError::Unavailable(_) => ("unavailable", "Temporarily unavailable"),
            ApiError::Unauthorized(_) => ("unauthorized", "Authentication required"),
            ApiError::Forbidden(_) => ("forbidden", "Not allowed"),
            ApiError::TooManyRequests(_) => ("rate-limited", "Too many requests"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) | ApiError::UnprocessableField { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (slug, title) = self.slug();
        let status = self.status_code();
        let errors = match self {
            ApiError::Invalid { errors, .. } => errors.clone(),
            ApiError::UnprocessableField { field, detail } => vec![FieldError {
                field: field.clone(),
                reason: detail.clone(),
            }],
            _ => Vec::new(),
        };
        let mut res = problem_response(status, slug, title, self.to_string(), errors);
        let headers = res.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static("Bearer realm=\"frontdoor\""),
                );
            }
            ApiError::TooManyRequests(secs) => {
                headers.insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from(*secs),
                );
            }
            _ => {}
        }
        res
    }
}

/// Builds a problem+json response.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header(("Retry-After", "5"));
    }
    builder
        .content_type("application/problem+json")
        .json(Problem {
            problem_type: format!("urn:frontdoor:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        })
}
