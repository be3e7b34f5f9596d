//! A SASL front for the test broker: Kafka's SASL authentication, then a plain pipe.
//!
//! Why it exists: the test bed's Tansu 0.6.0 accepts `--authentication` (SCRAM only) but
//! keeps no users in the storage engines of the prebuilt binary: `memory://` and `s3://`
//! are its "dynostore", whose `upsert_user_scram_credential` does nothing, so every login
//! fails with `unknown-user` (docs/KAFKA_SECURITY.md). Building Tansu with its sqlite
//! storage takes 11.5 minutes, too long for CI. So the test bed authenticates in front of
//! Tansu, the way a real broker does it on the wire, and the service's librdkafka cannot
//! tell the difference: SASL_PLAINTEXT is client -> this front -> Tansu, SASL_SSL is
//! client -> stunnel (TLS) -> this front -> Tansu, with Tansu advertising the outermost
//! address.
//!
//! Protocol (KIP-43, KIP-152): before authentication a connection may send ApiVersions
//! (passed to Tansu and its answer back), then SaslHandshake (v0/v1: the mechanism) and
//! SaslAuthenticate (v0/v1: the mechanism's messages), which this front answers itself.
//! Mechanisms: PLAIN and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) against a fixed list of
//! users, and OAUTHBEARER (RFC 7628) with the tokens of the front's own OAuth token
//! endpoint (client credentials grant, RFC 6749 4.4: what librdkafka's built-in OIDC
//! client, `sasl.oauthbearer.method=oidc`, asks for). Tokens are unsigned JWTs with the
//! `sub` and `exp` claims librdkafka reads; the front accepts only tokens it issued.
//! Any other request before authentication closes the connection, as Kafka does;
//! a failed authentication answers SASL_AUTHENTICATION_FAILED (58) and closes it. Once
//! authenticated, bytes flow both ways unchanged until either side closes.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
/// The OAuth client the token endpoint knows (test credentials, not a secret).
pub const OAUTH_CLIENT_ID: &str = "ftp-pooler-test-client";
pub const OAUTH_CLIENT_SECRET: &str = "ftp-pooler-test-client-secret";
const ITERATIONS: u32 = 4096;
/// Frames over this are not Kafka requests of an unauthenticated client.
const MAX_FRAME: usize = 1 << 20;

/// A running front (it lives as long as the test process).
pub struct SaslFront {
    port: u16,
    token_port: u16,
    issued: Issued,
}

/// The tokens the endpoint issued.
type Issued = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

impl SaslFront {
    /// Listens on a free 127.0.0.1 port and passes authenticated connections to
    /// 127.0.0.1:`upstream`. `users` are (name, password).
    pub fn start(upstream: u16, users: &[(&str, &str)]) -> SaslFront {
        let users: Arc<HashMap<String, String>> = Arc::new(
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        );
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("SASL front: bind");
            l.set_nonblocking(true).expect("nonblocking");
            l
        };
        let (std_listener, token_listener) = (bind(), bind());
        let port = std_listener.local_addr().expect("local addr").port();
        let token_port = token_listener.local_addr().expect("local addr").port();
        let issued: Issued = Arc::default();
        let kept = issued.clone();
        std::thread::Builder::new()
            .name(format!("sasl-front-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("SASL front runtime");
                rt.block_on(async move {
                    let tokens = TcpListener::from_std(token_listener).expect("listener");
                    let endpoint_issued = issued.clone();
                    tokio::spawn(async move {
                        loop {
                            if let Ok((c, _)) = tokens.accept().await {
                                let issued = endpoint_issued.clone();
                                tokio::spawn(async move {
                                    let _ = token_endpoint(c, &issued).await;
                                });
                            }
                        }
                    });
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let users = users.clone();
                        let issued = issued.clone();
                        tokio::spawn(async move {
                            let _ = serve(client, upstream, &users, &issued).await;
                        });
                    }
                });
            })
            .expect("SASL front thread");
        SaslFront {
            port,
            token_port,
            issued: kept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many tokens the endpoint issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.issued.lock().expect("issued").len()
    }

    /// The OAuth token endpoint (`sasl.oauthbearer.token.endpoint.url`).
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.token_port)
    }
}

/// One HTTP request to the token endpoint: a client credentials grant with HTTP Basic
/// authentication of [`OAUTH_CLIENT_ID`] -> an unsigned JWT for an hour; 401 otherwise.
async fn token_endpoint(mut c: TcpStream, issued: &Issued) -> io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    // Headers, then the body by Content-Length.
    let (head_end, length) = loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
        if request.len() > MAX_FRAME {
            return Ok(());
        }
    };
    while request.len() < head_end + length {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let body = String::from_utf8_lossy(&request[head_end..]).into_owned();
    let b64 = base64::engine::general_purpose::STANDARD;
    let expected = format!(
        "basic {}",
        b64.encode(format!("{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"))
    );
    let authorized = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("authorization:")
            .is_some_and(|v| v.trim() == expected.to_ascii_lowercase())
    });
    let granted = body.contains("grant_type=client_credentials");
    let (status, json) = if authorized && granted {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = format!(
            "{}.{}.{}",
            url.encode(r#"{"alg":"none","typ":"JWT"}"#),
            url.encode(format!(
                r#"{{"sub":"{OAUTH_CLIENT_ID}","iat":{now},"exp":{},"jti":"{:016x}"}}"#,
                now + 3600,
                fastrand::u64(..)
            )),
            url.encode("unsigned")
        );
        issued.lock().expect("issued").insert(token.clone());
        (
            "200 OK",
            format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"error":"invalid_client"}"#.to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    c.write_all(response.as_bytes()).await?;
    c.shutdown().await
}

/// OAUTHBEARER (RFC 7628): `n,,\x01auth=Bearer <token>\x01\x01`, with a token this
/// front's endpoint issued.
fn oauthbearer(auth: &[u8], issued: &Issued) -> Step {
    let text = String::from_utf8_lossy(auth);
    let token = text
        .split('\x01')
        .find_map(|kv| kv.strip_prefix("auth=Bearer "))
        .map(str::trim);
    match token {
        Some(t) if issued.lock().expect("issued").contains(t) => Step::Done(Vec::new()),
        _ => Step::Fail(
            SASL_AUTHENTICATION_FAILED,
            "Authentication failed: invalid token".into(),
        ),
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: u16,
    users: &HashMap<String, String>,
    issued: &Issued,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut broker = TcpStream::connect(("127.0.0.1", upstream)).await?;
    broker.set_nodelay(true)?;
    let mut mechanism: Option<&'static str> = None;
    let mut scram: Option<ScramExchange> = None;
    loop {
        let frame = read_frame(&mut client).await?;
        let header = Header::parse(&frame)?;
        match header.api_key {
            API_VERSIONS => {
                write_frame(&mut broker, &frame).await?;
                let answer = read_frame(&mut broker).await?;
                write_frame(&mut client, &answer).await?;
            }
            SASL_HANDSHAKE => {
                let mut body = Reader(&frame[header.body..]);
                let wanted = body.string()?;
                let found = MECHANISMS.iter().copied().find(|m| *m == wanted);
                mechanism = found;
                let mut out = header.response();
                out.extend(
                    if found.is_some() {
                        0i16
                    } else {
                        UNSUPPORTED_SASL_MECHANISM
                    }
                    .to_be_bytes(),
                );
                out.extend((MECHANISMS.len() as i32).to_be_bytes());
                for m in MECHANISMS {
                    put_string(&mut out, m);
                }
                write_frame(&mut client, &out).await?;
                if found.is_none() {
                    return Ok(());
                }
            }
            SASL_AUTHENTICATE => {
                let mut body = Reader(&frame[header.body..]);
                let auth = body.bytes()?;
                let step = match mechanism {
                    None => Step::Fail(ILLEGAL_SASL_STATE, "no SaslHandshake before".into()),
                    Some("PLAIN") => plain(auth, users),
                    Some("OAUTHBEARER") => oauthbearer(auth, issued),
                    Some(m) => match scram.take() {
                        None => match ScramExchange::first(m, auth, users) {
                            Ok((exchange, out)) => {
                                scram = Some(exchange);
                                Step::Continue(out)
                            }
                            Err(e) => Step::Fail(SASL_AUTHENTICATION_FAILED, e),
                        },
                        Some(exchange) => match exchange.last(auth) {
                            Ok(out) => Step::Done(out),
                            Err(e) => Step::Fail(SASL_AUTHENTICATION_FAILED, e),
                        },
                    },
                };
                let (code, message, bytes, done) = match step {
                    Step::Continue(b) => (0, None, b, false),
                    Step::Done(b) => (0, None, b, true),
                    Step::Fail(code, m) => (code, Some(m), Vec::new(), false),
                };
                let mut out = header.response();
                out.extend(code.to_be_bytes());
                match &message {
                    Some(m) => put_string(&mut out, m),
                    None => out.extend((-1i16).to_be_bytes()),
                }
                out.extend((bytes.len() as i32).to_be_bytes());
                out.extend(&bytes);
                if header.api_version >= 1 {
                    out.extend(0i64.to_be_bytes());
                }
                write_frame(&mut client, &out).await?;
                if code != 0 {
                    return Ok(());
                }
                if done {
                    break;
                }
            }
            _ => return Ok(()),
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}

enum Step {
    Continue(Vec<u8>),
    Done(Vec<u8>),
    Fail(i16, String),
}

/// PLAIN (RFC 4616): `[authzid] NUL user NUL password`.
fn plain(auth: &[u8], users: &HashMap<String, String>) -> Step {
    let parts: Vec<&[u8]> = auth.split(|b| *b == 0).collect();
    match parts.as_slice() {
        [_, user, password]
            if users
                .get(&*String::from_utf8_lossy(user))
                .map(String::as_bytes)
                == Some(*password) =>
        {
            Step::Done(Vec::new())
        }
        _ => Step::Fail(
            SASL_AUTHENTICATION_FAILED,
            "Authentication failed: Invalid username or password".into(),
        ),
    }
}

/// One SCRAM exchange, between the client's first message and its last.
struct ScramExchange {
    digest: &'static str,
    password: String,
    salt: Vec<u8>,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl ScramExchange {
    /// The client's first message (`n,,n=user,r=nonce`) -> the server's first.
    fn first(
        mechanism: &'static str,
        auth: &[u8],
        users: &HashMap<String, String>,
    ) -> Result<(ScramExchange, Vec<u8>), String> {
        let text = std::str::from_utf8(auth).map_err(|_| "not UTF-8".to_string())?;
        let bare = text
            .strip_prefix("n,,")
            .ok_or("only gs2 header n,, is supported")?;
        let field = |name: &str| {
            bare.split(',')
                .find_map(|f| f.strip_prefix(name))
                .map(str::to_string)
        };
        let user = field("n=")
            .ok_or("no user")?
            .replace("=2C", ",")
            .replace("=3D", "=");
        let client_nonce = field("r=").ok_or("no nonce")?;
        let password = users
            .get(&user)
            .ok_or_else(|| "Authentication failed during authentication due to invalid credentials with SASL mechanism".to_string())?
            .clone();
        let nonce = format!(
            "{client_nonce}{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let salt: Vec<u8> = (0..16).map(|_| fastrand::u64(..) as u8).collect();
        let server_first = format!(
            "r={nonce},s={},i={ITERATIONS}",
            base64::engine::general_purpose::STANDARD.encode(&salt)
        );
        let out = server_first.clone().into_bytes();
        Ok((
            ScramExchange {
                digest: mechanism,
                password,
                salt,
                nonce,
                client_first_bare: bare.to_string(),
                server_first,
            },
            out,
        ))
    }

    /// The client's last message (`c=biws,r=nonce,p=proof`) -> the server's signature.
    fn last(self, auth: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(auth).map_err(|_| "not UTF-8".to_string())?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or("no proof")?;
        let nonce = without_proof
            .split(',')
            .find_map(|f| f.strip_prefix("r="))
            .ok_or("no nonce")?;
        if nonce != self.nonce {
            return Err("nonce mismatch".into());
        }
        let proof = base64::engine::general_purpose::STANDARD
            .decode(proof)
            .map_err(|_| "proof is not base64")?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = match self.digest {
            "SCRAM-SHA-256" => {
                verify_sha256(&self.password, &self.salt, &auth_message, &proof)
            }
            _ => verify_sha512(&self.password, &self.salt, &auth_message, &proof),
        }
        .ok_or_else(|| {
            "Authentication failed during authentication due to invalid credentials with SASL mechanism"
                .to_string()
        })?;
        Ok(format!(
            "v={}",
            base64::engine::general_purpose::STANDARD.encode(signature)
        )
        .into_bytes())
    }
}

/// RFC 5802's check of a client proof, for one hash function; the server signature when
/// the proof is right.
macro_rules! scram_verify {
    ($name:ident, $digest:ty) => {
        fn $name(password: &str, salt: &[u8], auth_message: &str, proof: &[u8]) -> Option<Vec<u8>> {
            let mut salted = vec![0u8; <$digest>::output_size()];
            pbkdf2::pbkdf2_hmac::<$digest>(password.as_bytes(), salt, ITERATIONS, &mut salted);
            let hmac = |key: &[u8], data: &[u8]| {
                let mut mac = <Hmac<$digest>>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            };
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = <$digest>::digest(&client_key).to_vec();
            let client_signature = hmac(&stored_key, auth_message.as_bytes());
            if proof.len() != client_signature.len() {
                return None;
            }
            let recovered: Vec<u8> = proof
                .iter()
                .zip(&client_signature)
                .map(|(a, b)| a ^ b)
                .collect();
            if <$digest>::digest(&recovered).to_vec() != stored_key {
                return None;
            }
            let server_key = hmac(&salted, b"Server Key");
            Some(hmac(&server_key, auth_message.as_bytes()))
        }
    };
}
scram_verify!(verify_sha256, Sha256);
scram_verify!(verify_sha512, Sha512);

/// A request header v1 (api_key, api_version, correlation_id, client_id).
struct Header {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    /// Where the body starts (only for non-flexible versions, the only ones parsed).
    body: usize,
}

impl Header {
    fn parse(frame: &[u8]) -> io::Result<Header> {
        let mut r = Reader(frame);
        let api_key = r.i16()?;
        let api_version = r.i16()?;
        let correlation_id = r.i32()?;
        let client_id_len = r.i16()?;
        if client_id_len > 0 {
            r.take(client_id_len as usize)?;
        }
        Ok(Header {
            api_key,
            api_version,
            correlation_id,
            body: frame.len() - r.0.len(),
        })
    }

    /// A response header v0.
    fn response(&self) -> Vec<u8> {
        self.correlation_id.to_be_bytes().to_vec()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short frame"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i16(&mut self) -> io::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn string(&mut self) -> io::Result<String> {
        let n = self.i16()?.max(0) as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.i32()?.max(0) as usize;
        self.take(n)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

async fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = i32::from_be_bytes(len).max(0) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut frame = vec![0u8; len];
    s.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame(s: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend((payload.len() as i32).to_be_bytes());
    out.extend(payload);
    s.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (SCRAM-SHA-256, user "user", password "pencil").
    #[test]
    fn the_rfc_7677_example_verifies() {
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = base64::engine::general_purpose::STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = verify_sha256("pencil", &salt, &auth_message, &proof).expect("verifies");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(verify_sha256("pencil2", &salt, &auth_message, &proof).is_none());
    }
}
