//! Request extractors that answer bad input with the JSON error body.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// `Json<T>` whose rejections are [`ApiError`]s: 400 for malformed JSON, wrong types and
/// missing fields; 413 for a body over the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::Malformed("expected a JSON body with Content-Type: application/json".into()));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::TooLarge(copains_client_core::limits::BODY_MAX_BYTES))
            }
            Err(r) => return Err(ApiError::Malformed(r.body_text())),
        };
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                integral_retry(&bytes).ok_or_else(|| ApiError::Malformed(e.body_text())).map(Self)
            }
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A JSON body read as `T` (for routes whose body is optional), with the leniency of
/// [`ApiJson`] about integers written as `3600.0`.
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).or_else(|e| integral_retry(bytes).ok_or_else(|| ApiError::Malformed(format!("body: {e}"))))
}

/// JSON has one kind of number: `3600.0` is 3600. A body refused only for such a number is
/// read again with them as integers (never on the usual path).
fn integral_retry<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !integral_floats_to_integers(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// `application/json`, or any `application/…+json`, parameters aside.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns every number written with a fraction of zero (`2.0`, `3.6e3`) that fits a 64-bit
/// integer into that integer; true when it changed one.
fn integral_floats_to_integers(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53, where every integer is exact as a float.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *value = serde_json::Value::from(i);
                return true;
            }
            false
        }
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |changed, v| integral_floats_to_integers(v) | changed),
        serde_json::Value::Object(fields) => {
            fields.values_mut().fold(false, |changed, v| integral_floats_to_integers(v) | changed)
        }
        _ => false,
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::Malformed("expected a JSON body with Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(copains_client_core::limits::BODY_MAX_BYTES)
        }
        JsonRejection::JsonDataError(e) => ApiError::Malformed(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::Malformed(e.body_text()),
        other => ApiError::Malformed(other.body_text()),
    }
}

/// The client's IP address: the socket's, or, behind a configured trusted proxy, the
/// right-most untrusted `X-Forwarded-For` entry (see [`crate::client_ip`]). Unspecified when
/// the server runs without connection info, as in unit tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(Self(crate::client_ip::resolve(peer, &parts.headers, &state.config.trusted_proxies)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        secs: u64,
        position: i32,
        ratio: Option<f64>,
    }

    async fn read(content_type: &str, body: &str) -> Result<Body, ApiError> {
        let req = Request::builder()
            .method("POST")
            .header("content-type", content_type)
            .body(axum::body::Body::from(body.to_owned()))
            .expect("request");
        ApiJson::<Body>::from_request(req, &()).await.map(|ApiJson(b)| b)
    }

    #[tokio::test]
    async fn integral_numbers_are_integers_however_written() {
        let want = Body { secs: 3600, position: -2, ratio: Some(2.0) };
        assert_eq!(read("application/json", r#"{"secs": 3600, "position": -2, "ratio": 2}"#).await.expect("plain"), want);
        assert_eq!(
            read("application/json; charset=utf-8", r#"{"secs": 3600.0, "position": -2.0, "ratio": 2.0}"#).await.expect("floats"),
            want
        );
        assert_eq!(
            read("application/merge-patch+json", r#"{"secs": 3.6e3, "position": -2, "ratio": 2}"#).await.expect("exponent"),
            want
        );
        for refused in [
            r#"{"secs": 3600.5, "position": 0}"#,
            r#"{"secs": -1.0, "position": 0}"#,
            r#"{"secs": 1e300, "position": 0}"#,
            r#"{"secs": 1.0, "position": 0, "extra": 1}"#,
            r#"{"secs": 1.0"#,
        ] {
            assert!(matches!(read("application/json", refused).await, Err(ApiError::Malformed(_))), "{refused}");
        }
        assert!(matches!(read("text/plain", r#"{"secs": 1, "position": 0}"#).await, Err(ApiError::Malformed(_))));
    }
}
