//! The success envelope: `{"data": …, "meta": {request_id, api_version, timestamp,
//! limit, next_cursor, has_more}}`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context::RequestContext;

/// The API version reported in every `meta`.
pub const API_VERSION: &str = "v2";

/// Pagination fields of `meta`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Page {
    /// The page size used.
    pub limit: Option<u32>,
    /// Opaque cursor of the next page.
    pub next_cursor: Option<String>,
    /// Whether more items follow.
    pub has_more: Option<bool>,
}

/// `meta` of every success body.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Meta<'a> {
    /// The request id (also in `X-Request-Id`).
    pub request_id: &'a str,
    /// `v2`.
    #[schemars(extend("enum" = ["v2"]))]
    pub api_version: &'static str,
    /// When the answer was made (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub timestamp: String,
    /// The page size, on lists.
    pub limit: Option<u32>,
    /// The next page's cursor, on lists with more.
    pub next_cursor: Option<&'a str>,
    /// Whether more items follow, on lists.
    pub has_more: Option<bool>,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    data: &'a T,
    meta: Meta<'a>,
}

/// A success response in the envelope.
pub struct Reply<T> {
    status: StatusCode,
    data: T,
    page: Page,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl<T: Serialize> Reply<T> {
    /// 200 with `data`.
    pub fn ok(data: T) -> Self {
        Self::with_status(StatusCode::OK, data)
    }

    /// 201 with `data`.
    pub fn created(data: T) -> Self {
        Self::with_status(StatusCode::CREATED, data)
    }

    /// 202 with `data`.
    pub fn accepted(data: T) -> Self {
        Self::with_status(StatusCode::ACCEPTED, data)
    }

    /// Any status with `data`.
    pub fn with_status(status: StatusCode, data: T) -> Self {
        Self {
            status,
            data,
            page: Page::default(),
            headers: Vec::new(),
        }
    }

    /// Adds pagination.
    pub fn page(mut self, page: Page) -> Self {
        self.page = page;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds `Set-Cookie` headers, one per value.
    pub fn cookies(mut self, values: impl IntoIterator<Item = HeaderValue>) -> Self {
        for v in values {
            self.headers.push((axum::http::header::SET_COOKIE, v));
        }
        self
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let ctx = RequestContext::current();
        let envelope = Envelope {
            data: &self.data,
            meta: Meta {
                request_id: &ctx.id,
                api_version: API_VERSION,
                timestamp: jiff::Timestamp::now().to_string(),
                limit: self.page.limit,
                next_cursor: self.page.next_cursor.as_deref(),
                has_more: self.page.has_more,
            },
        };
        let body = match serde_json::to_vec(&envelope) {
            Ok(body) => body,
            Err(err) => return crate::error::ApiError::internal(err).into_response(),
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}
