//! A payment gateway in test mode, for `taskplane dev` and tests: it speaks
//! the protocol of [`super::gateway`], moves no money, and writes each
//! charge as a JSON file (`<charge id>.json`, with its key and request) in
//! its directory, where a person can look.
//!
//! It honours idempotency keys: a repeated key answers the first charge
//! again (`Idempotent-Replayed: true`), and a key used for a different
//! charge is refused with `409`. Customers choose the outcome, as test
//! cards do at real providers:
//!
//! - a `customer_id` ending in `_declined` is declined for good
//!   (`card_declined`);
//! - one ending in `_insufficient` is declined as retryable
//!   (`insufficient_funds`) the first time a key is seen, and charged when
//!   the key comes again;
//! - any other is charged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use taskplane_common::http_server::{Answer, serve};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// A test-mode gateway: its ledger of charges, one file each.
pub struct TestModeGateway {
    dir: PathBuf,
    /// One request at a time, so a key is never charged twice at once.
    lock: Mutex<()>,
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, code: &str, message: &str, retryable: bool) -> Response<Full<Bytes>> {
    reply(
        status,
        &json!({"error": {"code": code, "message": message, "retryable": retryable}}),
    )
}

/// The charge id of a key: the same key always names the same charge.
fn charge_id(key: &str) -> String {
    format!("ch_{}", &hex::encode(Sha256::digest(key.as_bytes()))[..24])
}

impl TestModeGateway {
    /// A gateway recording charges in `dir` (created if missing).
    pub async fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        tokio::fs::create_dir_all(dir).await?;
        Ok(Arc::new(TestModeGateway {
            dir: dir.to_owned(),
            lock: Mutex::new(()),
        }))
    }

    /// Where it records charges.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves the gateway alone on `listener` until the runtime stops;
    /// returns its base URL, for `TASKPLANE_PAYMENT_GATEWAY_URL`.
    pub fn serve_alone(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<String> {
        let url = format!("http://{}", listener.local_addr()?);
        let gateway = Arc::clone(self);
        let answer: Answer = Arc::new(move |request| {
            let gateway = Arc::clone(&gateway);
            Box::pin(async move { gateway.answer(request).await })
        });
        tokio::spawn(serve(listener, answer, CancellationToken::new()));
        Ok(url)
    }

    /// Answers `POST /charges`; any other request is 404.
    pub async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != hyper::Method::POST || request.uri().path() != "/charges" {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "POST /charges is the only endpoint",
                false,
            );
        }
        let key = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        let Some(key) = key else {
            return error(
                StatusCode::BAD_REQUEST,
                "missing_key",
                "send an Idempotency-Key header",
                false,
            );
        };
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "the body could not be read",
                    false,
                );
            }
        };
        let Ok(charge_request) = serde_json::from_slice::<Value>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                "the body is not JSON",
                false,
            );
        };
        let _one_at_a_time = self.lock.lock().await;
        match self.charge(&key, charge_request).await {
            Ok(response) => response,
            Err(io) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ledger_unavailable",
                &format!("the charge could not be recorded: {io}"),
                true,
            ),
        }
    }

    async fn charge(&self, key: &str, request: Value) -> std::io::Result<Response<Full<Bytes>>> {
        let id = charge_id(key);
        let file = self.dir.join(format!("{id}.json"));
        if let Ok(text) = tokio::fs::read_to_string(&file).await {
            let recorded: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if recorded["request"] != request {
                return Ok(error(
                    StatusCode::CONFLICT,
                    "key_reused",
                    "this Idempotency-Key was used for a different charge",
                    false,
                ));
            }
            let mut response = reply(StatusCode::OK, &recorded["charge"]);
            response.headers_mut().insert(
                "idempotent-replayed",
                hyper::header::HeaderValue::from_static("true"),
            );
            return Ok(response);
        }
        let customer = request["customer_id"].as_str().unwrap_or_default();
        if customer.ends_with("_declined") {
            return Ok(error(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                "the card was declined",
                false,
            ));
        }
        let declined_once = self.dir.join(format!("{id}.declined"));
        if customer.ends_with("_insufficient") && tokio::fs::metadata(&declined_once).await.is_err()
        {
            tokio::fs::write(&declined_once, key).await?;
            return Ok(error(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                "the account has insufficient funds; try again later",
                true,
            ));
        }
        let charge = json!({
            "id": id,
            "status": "succeeded",
            "amount_cents": request["amount_cents"],
            "currency": request["currency"],
            "customer_id": request["customer_id"],
            "description": request["description"],
            "created_at": chrono::Utc::now().to_rfc3339(),
            "test_mode": true,
        });
        let record = json!({"key": key, "request": request, "charge": charge});
        // Written whole, then renamed: a crash never leaves half a charge.
        let partial = self.dir.join(format!("{id}.json.partial"));
        tokio::fs::write(&partial, serde_json::to_vec_pretty(&record)?).await?;
        tokio::fs::rename(&partial, &file).await?;
        Ok(reply(StatusCode::OK, &charge))
    }
}
