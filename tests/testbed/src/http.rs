//! A minimal HTTP/1.1 client for the tests (GET/POST, `Connection: close`), enough to
//! check the service's REST API and metrics endpoint without another dependency.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request to 127.0.0.1:`port`; returns the status code and the body.
pub async fn request(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    request_to(([127, 0, 0, 1], port).into(), method, path, &[]).await
}

/// One request to `addr` with extra `headers` (name, value); the status code and body.
pub async fn request_to(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// GET, with the body parsed as JSON.
pub async fn get_json(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = request(port, "GET", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {body:?}"));
    (status, value)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
