//! What the f5 provider lets out of a failing or hostile BIG-IP, against a scripted device
//! (plain HTTP/1.1 over a socket, so that a call can be failed the way a network fails it:
//! the connection closed without an answer).
//!
//! - The auth token never reaches a log line at any level: the token-extension and
//!   token-deletion calls carry it in their path, and reqwest's error text names the URL
//!   (issue 20, defect 1: `WARN … error sending request for url (…/authz/tokens/<token>)`).
//! - What the device says (its message, its management URL) reaches the log, not the error
//!   a Service's event is made of.
//! - A reply larger than the limit is not read.
//! - A configured `caBundle` replaces the system roots (tests/tls/: `system-ca` stands for
//!   the system store through `SSL_CERT_FILE`, in a child process).
//! - Plain `http://` is warned about.
//!
//! Every log line of the test process is captured at TRACE, `log` records (reqwest's)
//! included.

use portway_f5::{BigIp, Credentials};
use reqwest::Method;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

// ------------------------------------------------------------------ log capture

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line logged so far by any test of this binary (each test looks for its own
/// markers), at TRACE, reqwest's and hyper's included.
fn logs() -> String {
    let buf = LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        // `try_init` also routes the `log` crate (reqwest) into this subscriber.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

// ------------------------------------------------------------------ a scripted device

/// What the scripted device does with each call.
#[derive(Clone)]
struct Script {
    /// The token a login hands out.
    token: String,
    /// Close the connection without answering a call to `/mgmt/shared/authz/tokens/…`
    /// (extend, delete), as a network failure does.
    drop_token_calls: bool,
    /// The answer to every other call but the partition list: status and body.
    answer: (u16, String),
    /// Send the answer without a content-length (streamed until the connection closes).
    unsized_answer: bool,
}

/// One request's first line and body.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some((head.lines().next().unwrap_or("").to_string(), body))
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, script: Script) {
    let Some((line, _body)) = read_request(&mut s).await else {
        return;
    };
    let (status, body, sized) = if line.starts_with("POST /mgmt/shared/authn/login") {
        let body = format!(
            r#"{{"token":{{"token":"{}","timeout":1200}}}}"#,
            script.token
        );
        (200, body, true)
    } else if line.contains("/mgmt/shared/authz/tokens/") {
        if script.drop_token_calls {
            return; // closed without an answer
        }
        (200, r#"{"timeout":3600}"#.to_string(), true)
    } else if line.starts_with("GET /mgmt/tm/auth/partition") {
        let body = r#"{"items":[{"name":"portway","defaultRouteDomain":0}]}"#.to_string();
        (200, body, true)
    } else {
        (
            script.answer.0,
            script.answer.1.clone(),
            !script.unsized_answer,
        )
    };
    let mut head = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n");
    if sized {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Serves `script` over plain HTTP; returns the base URL.
async fn device(script: Script) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_one(s, script.clone()));
        }
    });
    url
}

fn script(token: &str) -> Script {
    Script {
        token: token.into(),
        drop_token_calls: false,
        answer: (200, "{}".into()),
        unsized_answer: false,
    }
}

async fn client(url: &str, ca_bundle: &str) -> BigIp {
    let b = BigIp::new(url, ca_bundle, false).expect("client");
    b.set_credentials(Credentials {
        username: "admin".into(),
        password: "pw-not-logged".into(),
    })
    .await;
    b
}

// ------------------------------------------------------------------ tests

/// Defect 1: the token-extension call fails (connection closed) and so does the deletion at
/// logout; the warning is logged, and neither the token nor its URL is.
#[tokio::test]
async fn a_failed_token_extension_or_deletion_never_logs_the_token() {
    logs();
    let token = "TOKEN4EXTENSIONTEST0123456789";
    let url = device(Script {
        drop_token_calls: true,
        ..script(token)
    })
    .await;
    let b = client(&url, "").await;
    b.call(Method::GET, "/mgmt/tm/ltm/pool", None, None)
        .await
        .expect("the token works although its lifetime was not extended");
    b.logout().await;
    let out = logs();
    assert!(
        out.contains("BIG-IP token lifetime not extended"),
        "the failure is logged:\n{out}"
    );
    assert!(
        !out.contains(token),
        "the token reached the log:\n{}",
        out.lines()
            .filter(|l| l.contains(token))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!out.contains("pw-not-logged"));
}

/// Defect 6: what the device says stays in the log; the error a Service's event is made of
/// holds a short reason and neither the device's message nor its URL.
#[tokio::test]
async fn the_devices_message_and_url_reach_the_log_not_the_event() {
    logs();
    let detail = "01070734:3: Configuration error: DEVICE-DETAIL-MARKER user=admin@corp";
    let url = device(Script {
        answer: (400, format!(r#"{{"code":400,"message":"{detail}"}}"#)),
        ..script("TOKENEVENTTEST")
    })
    .await;
    let b = client(&url, "").await;
    let e = b
        .call(Method::POST, "/mgmt/tm/ltm/pool", None, None)
        .await
        .expect_err("refused");
    let event = e.to_string();
    assert!(!event.contains("DEVICE-DETAIL-MARKER"), "{event}");
    assert!(!event.contains(&url), "{event}");
    assert!(event.contains("400") && event.contains("log"), "{event}");
    assert!(event.len() < 160, "a short reason: {event}");
    assert!(logs().contains("DEVICE-DETAIL-MARKER"), "the log has it");

    // A device that cannot be reached: the URL is not in the error either.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let e = client(&gone, "")
        .await
        .call(Method::GET, "/mgmt/tm/ltm/pool", None, None)
        .await
        .expect_err("nothing listens");
    assert!(!e.to_string().contains("127.0.0.1"), "{e}");
}

/// Defect 6: a reply larger than the limit is refused, whether it announces its length or
/// streams until the connection closes.
#[tokio::test]
async fn a_reply_larger_than_the_limit_is_not_read() {
    logs();
    let huge = format!(r#"{{"items":["{}"]}}"#, "x".repeat(33 << 20));
    for unsized_answer in [false, true] {
        let url = device(Script {
            answer: (200, huge.clone()),
            unsized_answer,
            ..script("TOKENLIMITTEST")
        })
        .await;
        let e = client(&url, "")
            .await
            .call(Method::GET, "/mgmt/tm/ltm/pool", None, None)
            .await
            .expect_err("too large");
        assert!(
            e.to_string().contains("reply too large"),
            "unsized {unsized_answer}: {e}"
        );
    }
    assert!(logs().contains("larger than 32 MiB"));
}

/// Defect 1: plain http is allowed (labs, this test) but warned about.
#[tokio::test]
async fn plain_http_is_warned_about() {
    logs();
    let _ = BigIp::new("http://127.0.0.1:1", "", false).expect("client");
    assert!(logs().contains("f5.url uses plain http"));
}

// ------------------------------------------------------------------ caBundle

const CHILD: &str = "PORTWAY_F5_TLS_CHILD";

fn tls_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

/// Serves `script` over TLS with tests/tls/bigip.pem (signed by `system-ca`).
async fn tls_device(script: Script) -> String {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls_file("bigip.pem"))
        .expect("bigip.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(tls_file("bigip.key")).expect("bigip.key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, script) = (acceptor.clone(), script.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve_one(tls, script).await;
                }
            });
        }
    });
    url
}

/// Defect 1: a configured `caBundle` replaces the system roots. The device's certificate
/// is signed by a CA of the (stand-in) system store: trusted with no bundle, trusted with
/// a bundle of that CA, and refused with a bundle of another CA, which an added-to store
/// would have accepted.
#[tokio::test]
async fn a_ca_bundle_replaces_the_system_roots() {
    if std::env::var_os(CHILD).is_none() {
        // SSL_CERT_FILE is read by the platform verifier when the client is built; a child
        // process gets its own environment.
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "a_ca_bundle_replaces_the_system_roots",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("SSL_CERT_FILE", tls_file("system-ca.pem"))
            .env("SSL_CERT_DIR", tls_file("no-such-dir"))
            .output()
            .expect("run the child");
        assert!(
            out.status.success(),
            "child:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let url = tls_device(script("TOKENTLSTEST")).await;
    let pem = |n: &str| std::fs::read_to_string(tls_file(n)).expect("pem");
    let get = |bundle: String| {
        let url = url.clone();
        async move {
            client(&url, &bundle)
                .await
                .call(Method::GET, "/mgmt/tm/ltm/pool", None, None)
                .await
        }
    };
    get(String::new())
        .await
        .expect("the system store (SSL_CERT_FILE) trusts the device");
    get(pem("system-ca.pem"))
        .await
        .expect("a bundle of the device's CA trusts it");
    let e = get(pem("other-ca.pem"))
        .await
        .expect_err("a bundle of another CA must not fall back to the system store");
    assert!(e.to_string().contains("connection failed"), "{e}");
    assert!(
        BigIp::new(&url, "not a certificate", false).is_err(),
        "a bundle without a certificate is refused"
    );
}
