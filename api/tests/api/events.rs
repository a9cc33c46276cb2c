//! Live events over SSE, single-use event tokens, and token redaction in logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::common::{TestEnv, memory_defaults};

/// Reads SSE events from a body.
pub struct EventReader {
    body: Body,
    buffer: String,
}

impl EventReader {
    pub fn new(response: axum::response::Response) -> Self {
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event (name, JSON data), skipping comments.
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).expect("JSON data"));
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("an event within 5 s")
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Waits until the server ends the stream (skipping what is still queued).
    async fn ended(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => panic!("the stream was still open after {within:?}"),
                Ok(None) => return,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("the stream failed instead of ending: {e}"),
            }
        }
    }

    /// The next event about a session, skipping others.
    pub async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (n, data) = self.next().await;
            if n == name {
                return data;
            }
        }
    }
}

async fn events_stream_the_callers_sessions(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let existing = t.session(&ada).await;
    let response = t.get("/api/v2/events").cookie(&ada).send_streaming().await;
    let mut events = EventReader::new(response);
    let (name, snapshot) = events.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot.as_array().unwrap().len(), 1);
    assert_eq!(snapshot[0]["id"], existing["id"]);
    // Bob's changes are not Ada's business.
    t.session(&bob).await;
    let created = t.session(&ada).await;
    // Only Ada's sessions (the existing one may still be starting) until the new one shows.
    loop {
        let event = events.next_named("session").await;
        assert_eq!(event["owner"], ada.id.as_str());
        if event["id"] == created["id"] {
            break;
        }
    }
    // Running, then stopped, arrive as changes.
    let id = created["id"].as_str().unwrap();
    loop {
        let e = events.next_named("session").await;
        assert_eq!(e["owner"], ada.id.as_str());
        if e["id"] == id && e["phase"] == "running" {
            break;
        }
    }
    t.req(Method::DELETE, &format!("/api/v2/external/sessions/{id}"))
        .cookie(&t.admin("root@example.org").await)
        .send()
        .await;
    loop {
        let (name, e) = events.next().await;
        if name == "session_deleted" {
            assert_eq!(e["id"], id);
            break;
        }
    }
    t.refuses_anonymous(Method::GET, "/api/v2/events").await;
}

/// A stream lasts as long as the login it was opened under: logging out ends
/// the one opened with the login cookie and the one opened with an event
/// token issued under that login; a stream of the same user's other login
/// goes on.
async fn a_stream_ends_when_its_login_does(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let other_login = t.log_in_again("ada@example.org").await;
    let stream = |req: crate::common::Req| async move {
        let mut events = EventReader::new(req.send_streaming().await);
        assert_eq!(events.next().await.0, "snapshot");
        events
    };
    let mut by_cookie = stream(t.get("/api/v2/events").cookie(&ada)).await;
    let issued = t.event_token(&ada).await;
    let uri = format!("/api/v2/events?token={}", issued["token"].as_str().unwrap());
    let mut by_event_token = stream(t.get(&uri)).await;
    let mut other = stream(t.get("/api/v2/events").cookie(&other_login)).await;

    t.post_as(&ada, "/api/v2/auth/logout").await.data(200);
    // Ends within a second on this replica; the deadline is for a loaded machine.
    by_cookie.ended(Duration::from_secs(10)).await;
    by_event_token.ended(Duration::from_secs(10)).await;

    let created = t.session(&other_login).await;
    loop {
        let e = other.next_named("session").await;
        if e["id"] == created["id"] {
            break;
        }
    }
}

async fn event_tokens_are_single_use(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    t.refuses_anonymous(Method::POST, "/api/v2/events/token")
        .await;
    let issued = t.event_token(&ada).await;
    assert_eq!(issued["expires_in"], 60);
    let token = issued["token"].as_str().unwrap();
    let uri = format!("/api/v2/events?token={token}");
    let mut events = EventReader::new(t.get(&uri).send_streaming().await);
    assert_eq!(events.next().await.0, "snapshot");
    t.get(&uri).send().await.problem(401, "unauthenticated");
    t.refuses_anonymous(Method::GET, "/api/v2/events?token=made-up")
        .await;
    // A login token is not an event token.
    t.get(&format!("/api/v2/events?token={}", ada.token))
        .send()
        .await
        .problem(401, "unauthenticated");
}

async fn event_tokens_expire(env: TestEnv) {
    let t = env
        .app_with(
            |c| c.auth.event_token_ttl = Duration::ZERO,
            memory_defaults(),
        )
        .await;
    let ada = t.user("ada@example.org").await;
    let issued = t.event_token(&ada).await;
    let uri = format!("/api/v2/events?token={}", issued["token"].as_str().unwrap());
    t.get(&uri).send().await.problem(401, "unauthenticated");
}

/// Moves a session's start back by `minutes` (as if it had run that long),
/// and waits until the api's index has seen it.
async fn started_minutes_ago(t: &crate::common::TestApp, id: &str, minutes: i64) {
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes);
    let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at);
    t.backend
        .update_status(id, |st| st.started_at = Some(at.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while t
        .state()
        .index()
        .get(id)
        .and_then(|e| e.session.status.clone()?.started_at)
        != Some(at.clone())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index never saw the new start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `session.expiring` comes ahead of an idle stop (within the configured
/// warning), a keepalive moves the idle stop and brings a new warning for
/// the new time, and never moves the stop past the maximum lifetime.
async fn expiring_sessions_are_announced_and_keepalive_postpones_them(env: TestEnv) {
    let t = env
        .app_with(
            |c| c.sessions.expiry_warning = Duration::from_secs(30 * 60),
            memory_defaults(),
        )
        .await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let created = t
        .create_session(
            &ada,
            serde_json::json!({"gpus": 1, "idle_timeout": "10m", "max_lifetime": "20m"}),
        )
        .await
        .data(201);
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    t.wait_phase(&id, "running").await;
    let mut events = EventReader::new(t.get("/api/v2/events").cookie(&ada).send_streaming().await);
    assert_eq!(events.next().await.0, "snapshot");
    // Idle since it started 5 minutes ago: the idle stop is 5 minutes away.
    started_minutes_ago(&t, &id, 5).await;
    let first = events.next_named("session.expiring").await;
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["because"], "idle");
    let left = first["seconds_left"].as_i64().unwrap();
    assert!((240..=300).contains(&left), "{first}");

    let path = format!("/api/v2/external/sessions/{id}/keepalive");
    t.problem(Method::POST, &path, Some(&bob), 404, "not_found")
        .await;
    let kept = t.post_as(&ada, &path).await.data(200);
    assert_eq!(kept["message"], "Idle clock reset.");
    assert_eq!(kept["session"]["expires_because"], "idle");
    let written = t.backend.session(&id).unwrap();
    let recorded = written
        .status
        .unwrap()
        .last_activity_at
        .expect("written through at once");
    assert!(jiff::Timestamp::now().as_second() - recorded.0.as_second() <= 5);
    // A new warning, for a later time: a full idle timeout from now.
    let second = events.next_named("session.expiring").await;
    let later = second["seconds_left"].as_i64().unwrap();
    assert!(later > left && later <= 600, "{second} after {first}");
    assert_eq!(second["because"], "idle");

    // 15 minutes into a 20-minute lifetime, a keepalive cannot give it 10 more.
    started_minutes_ago(&t, &id, 15).await;
    let kept = t.post_as(&ada, &path).await.data(200);
    assert_eq!(kept["session"]["expires_because"], "lifetime", "{kept}");
    let until: jiff::Timestamp = kept["session"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = until.as_second() - jiff::Timestamp::now().as_second();
    assert!((240..=300).contains(&left), "{kept}");
    let third = events.next_named("session.expiring").await;
    assert_eq!(third["because"], "lifetime");

    // A stopped session cannot be kept alive.
    t.post_as(&ada, &format!("/api/v2/external/sessions/{id}/stop"))
        .await
        .data(202);
    t.wait_phase(&id, "stopped").await;
    t.post_as(&ada, &path)
        .await
        .problem(409, "session_not_running");
}

crate::scenarios!(
    expiring_sessions_are_announced_and_keepalive_postpones_them,
    events_stream_the_callers_sessions,
    a_stream_ends_when_its_login_does,
    event_tokens_are_single_use,
    event_tokens_expire,
);

/// A writer that keeps what the log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn tokens_never_appear_in_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (login_token, event_token) = rt.block_on(async {
        let t = TestEnv::Sqlite.app().await;
        let ada = t.user("ada@example.org").await;
        let issued = t.event_token(&ada).await;
        let token = issued["token"].as_str().unwrap().to_owned();
        let response = t
            .get(&format!("/api/v2/events?token={token}"))
            .send_streaming()
            .await;
        assert_eq!(response.status().as_u16(), 200);
        t.get("/api/v2/events?token=somethingsecret").send().await;
        (ada.token, token)
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token=***"),
        "the request log shows the route: {logs}"
    );
    for secret in [
        login_token.as_str(),
        event_token.as_str(),
        "somethingsecret",
    ] {
        assert!(!logs.contains(secret), "a token leaked into the logs");
    }
}
