//! How EC2 API failures are classified, with the real SDK against a local HTTP
//! server that answers like EC2 does when it throttles, fails or refuses us.

mod support;

use std::time::Duration;

use privatelink_dns::aws::Ec2Discovery;
use privatelink_dns::config::{AwsConfig, Target};
use privatelink_dns::discovery::{Discover, FailureReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves every request with `status` and an EC2 error body with `code`; with
/// `status` 0 it accepts and never answers.
async fn canned(status: u16, code: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                     <Message>canned {code}</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
                );
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn reason(url: String) -> (FailureReason, String) {
    support::aws_env();
    let aws = AwsConfig {
        region: Some("ap-northeast-1".into()),
        endpoint_url: Some(url),
        call_timeout: Duration::from_millis(500),
        ..AwsConfig::default()
    };
    let target = Target {
        region: Some("ap-northeast-1".into()),
        role_arn: None,
    };
    let err = Ec2Discovery::new(&aws, vec![(target, None)])
        .await
        .discover()
        .await
        .unwrap_err();
    (err.reason, err.to_string())
}

#[tokio::test]
async fn api_failures_are_classified() {
    let rows = [
        (400, "RequestLimitExceeded", FailureReason::Throttled),
        (503, "Unavailable", FailureReason::ServerError),
        (500, "InternalError", FailureReason::ServerError),
        (401, "AuthFailure", FailureReason::Credentials),
        (400, "ExpiredToken", FailureReason::Credentials),
        (403, "UnauthorizedOperation", FailureReason::Denied),
        (400, "InvalidParameterValue", FailureReason::Other),
        (0, "", FailureReason::Timeout),
    ];
    for (status, code, want) in rows {
        let (got, message) = reason(canned(status, code).await).await;
        assert_eq!(got, want, "{status} {code}: {message}");
        assert!(message.contains("DescribeVpcEndpoints"), "{message}");
        if !code.is_empty() {
            assert!(
                message.contains(code),
                "the API's words are kept: {message}"
            );
        }
    }
    // Nothing listening at all.
    let port = support::free_port();
    let (got, message) = reason(format!("http://127.0.0.1:{port}")).await;
    assert_eq!(got, FailureReason::Unreachable, "{message}");
}
