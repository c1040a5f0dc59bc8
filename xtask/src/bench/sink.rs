//! A minimal OTLP/HTTP receiver that accepts and discards (`POST /v1/traces`, protobuf or JSON),
//! so that exporting costs the exporter what a real collector would make it pay, while the
//! receiver itself stays cheap. Runs as its own process (`xtask bench --otlp-sink`), so its CPU
//! is not mixed with the load generator's.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serve until SIGTERM/SIGINT; prints `port N` on stdout when ready and a count line on exit.
pub fn serve() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("port {}", listener.local_addr()?.port());
        let counts = Arc::new(Counts::default());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                a = listener.accept() => {
                    if let Ok((s, _)) = a {
                        tokio::spawn(conn(s, counts.clone()));
                    }
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        eprintln!(
            "otlp-sink: {} requests, {} bytes",
            counts.requests.load(Relaxed),
            counts.bytes.load(Relaxed)
        );
        Ok(())
    })
}

async fn conn(mut s: TcpStream, counts: Arc<Counts>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Head.
        let end = loop {
            if let Some(e) = find(&buf, b"\r\n\r\n") {
                break e;
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let expect_continue = header("expect").is_some_and(|v| v.contains("100-continue"));
        buf.drain(..end + 4);
        if expect_continue {
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let mut body = 0usize;
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(e) = find(&buf, b"\r\n") {
                        break e;
                    }
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
                        .unwrap_or(0);
                buf.drain(..line_end + 2);
                // Chunk data plus its CRLF (the last chunk: just the final CRLF, no trailers expected).
                let need = size + 2;
                while buf.len() < need {
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..need);
                body += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            while buf.len() < len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..len);
            body = len;
        }
        counts.requests.fetch_add(1, Relaxed);
        counts.bytes.fetch_add(body as u64, Relaxed);
        // An empty ExportTraceServiceResponse is an empty protobuf message.
        let ctype = if head.contains("application/json") {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        let body: &str = if ctype == "application/json" {
            "{}"
        } else {
            ""
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await?;
    }
}
