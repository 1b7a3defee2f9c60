//! A stand-in for the EC2 instance metadata service that speaks IMDSv2
//! only, as instances launched with `HttpTokens=required` do: the instance
//! id is given only with a session token from `PUT /latest/api/token`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct FakeImds {
    /// For AWS_EC2_METADATA_SERVICE_ENDPOINT.
    pub url: String,
    /// Requests for the instance id that came without a valid token.
    pub refused: Arc<AtomicUsize>,
    /// Instance ids handed out.
    pub answered: Arc<AtomicUsize>,
}

const TOKEN: &str = "imdsv2-session-token";

pub fn start(instance_id: &str) -> FakeImds {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, a) = (Arc::clone(&refused), Arc::clone(&answered));
    let id = instance_id.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                headers.push(line.trim().to_ascii_lowercase());
            }
            let has = |name: &str| headers.iter().any(|h| h.starts_with(name));
            let (status, body) = match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..]
            {
                ["PUT", "/latest/api/token"] if has("x-aws-ec2-metadata-token-ttl-seconds:") => {
                    ("200 OK", TOKEN.to_owned())
                }
                ["GET", "/latest/meta-data/instance-id"] => {
                    if headers
                        .iter()
                        .any(|h| *h == format!("x-aws-ec2-metadata-token: {TOKEN}"))
                    {
                        a.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", id.clone())
                    } else {
                        r.fetch_add(1, Ordering::SeqCst);
                        ("401 Unauthorized", String::new())
                    }
                }
                _ => ("404 Not Found", String::new()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\
                 x-aws-ec2-metadata-token-ttl-seconds: 21600\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    FakeImds {
        url,
        refused,
        answered,
    }
}
