//! The S3 client, set up for S3-compatible servers (MinIO, Garage, moto, Ceph, R2, AWS).
//!
//! Path-style addressing (MinIO and most self-hosted servers have no per-bucket DNS), static
//! credentials, checksums only where the API requires them (Garage and older MinIO reject the
//! SDK's default streaming checksums over plain http), bounded timeouts and retries. SDK errors
//! become a typed [`S3Error`]: its kind (no such bucket, access denied, TLS, unreachable...) is
//! decided from the protocol's status and code and the transport's error types, never from text.

pub mod upload;

use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::ObjectsConfig;
use crate::error::{Error, Result, S3Error, S3ErrorKind};

/// Builds a client for `endpoint` (the configured one unless overridden).
pub fn client(cfg: &ObjectsConfig, endpoint: Option<&str>) -> Result<aws_sdk_s3::Client> {
    let endpoint = endpoint.or(cfg.endpoint.as_deref()).ok_or_else(|| {
        Error::config(
            "minio.endpoint",
            "no S3 endpoint configured: set MINIO_ENDPOINT",
        )
    })?;
    let (Some(ak), Some(sk)) = (&cfg.access_key, &cfg.secret_key) else {
        return Err(Error::config(
            "minio.access_key",
            "no S3 credentials: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD)",
        ));
    };
    let mut conf = aws_sdk_s3::config::Builder::new();
    if let Some(ca) = &cfg.ca_file {
        conf = conf.http_client(https_with_ca(ca)?);
    }
    let conf = conf
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(cfg.region.clone()))
        .credentials_provider(Credentials::new(
            ak.expose(),
            sk.expose(),
            None,
            None,
            "stackback",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build(),
        )
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

/// The SDK's HTTPS client, trusting the system roots plus the CA in `ca` (a private MinIO's).
fn https_with_ca(ca: &std::path::Path) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(ca).map_err(|e| {
        Error::config(
            "minio.ca_file",
            format!("cannot read {}: {e}", ca.display()),
        )
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::config(
            "minio.ca_file",
            format!("{} holds no PEM certificate", ca.display()),
        ));
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(
            tls::TrustStore::empty()
                .with_native_roots(true)
                .with_pem_certificate(pem),
        )
        .build()
        .map_err(|e| Error::config("minio.ca_file", format!("{}: {e}", ca.display())))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(ctx)
        .build_https())
}

/// Turns an SDK error into an [`S3Error`]: the service's code and message when it answered, the
/// transport's reason (refused, timed out, TLS) when it did not.
pub fn s3_error<E>(op: &'static str, bucket: &str, err: SdkError<E>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (kind, code, status, detail) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status().as_u16();
            let code = e.code().map(String::from);
            let kind = service_kind(op, code.as_deref(), status);
            let detail = match (e.code(), e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                (Some(c), None) => format!("{c} (HTTP {status})"),
                // HEAD responses carry no body: the status is all there is.
                _ => match kind {
                    S3ErrorKind::AccessDenied => "AccessDenied (HTTP 403): the server refused the credentials or the signature".into(),
                    S3ErrorKind::NoSuchBucket => "NoSuchBucket (HTTP 404): the bucket does not exist".into(),
                    S3ErrorKind::NoSuchKey => "NoSuchKey (HTTP 404): not found".into(),
                    S3ErrorKind::BadRequest => format!("HTTP {status}: the request was refused (a wrong MINIO_REGION or endpoint?)"),
                    _ => format!("HTTP {status} from the server"),
                },
            };
            (kind, code, Some(status), detail)
        }
        SdkError::TimeoutError(_) => (
            S3ErrorKind::Timeout,
            None,
            None,
            format!("cannot reach the endpoint: {}", readable(&err)),
        ),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                S3ErrorKind::Timeout
            } else {
                transport_kind(&err)
            };
            (
                kind,
                None,
                None,
                format!("cannot reach the endpoint: {}", readable(&err)),
            )
        }
        _ => (
            S3ErrorKind::Other,
            None,
            None,
            DisplayErrorContext(&err).to_string(),
        ),
    };
    S3Error {
        op,
        bucket: bucket.to_string(),
        key: None,
        kind,
        code,
        status,
        detail,
    }
}

fn service_kind(op: &str, code: Option<&str>, status: u16) -> S3ErrorKind {
    match (code, status) {
        (Some("NoSuchBucket"), _) => S3ErrorKind::NoSuchBucket,
        (Some("NoSuchKey"), _) => S3ErrorKind::NoSuchKey,
        (
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AuthorizationHeaderMalformed",
            ),
            _,
        )
        | (_, 401 | 403) => S3ErrorKind::AccessDenied,
        // A HEAD has no body to carry a code: the operation tells what was not found.
        (_, 404) if matches!(op, "HeadBucket" | "ListObjectsV2" | "CreateMultipartUpload") => {
            S3ErrorKind::NoSuchBucket
        }
        (_, 404) => S3ErrorKind::NoSuchKey,
        (_, 301 | 307 | 400) => S3ErrorKind::BadRequest,
        (_, s) if s >= 500 => S3ErrorKind::Service,
        _ => S3ErrorKind::Other,
    }
}

/// Classifies a failure to get a response by the I/O errors in its source chain: rustls reports
/// an untrusted certificate or a failed handshake as `InvalidData`.
fn transport_kind(err: &(dyn std::error::Error + 'static)) -> S3ErrorKind {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::InvalidData => return S3ErrorKind::Tls,
                std::io::ErrorKind::TimedOut => return S3ErrorKind::Timeout,
                _ => {}
            }
        }
        src = e.source();
    }
    S3ErrorKind::Unreachable
}

/// The context repeats itself as a Debug dump after the readable part: keep the latter.
fn readable<E: std::error::Error + 'static>(err: &E) -> String {
    let full = DisplayErrorContext(err).to_string();
    full.split(" (DispatchFailure(")
        .next()
        .unwrap_or(&full)
        .to_string()
}

/// Checks that the bucket exists and the credentials work, before any file is created.
pub async fn check_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<()> {
    client
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| Error::from(s3_error("HeadBucket", bucket, e)))
}

/// Attaches the object key to an S3 error.
pub fn with_key(mut e: S3Error, key: &str) -> S3Error {
    e.key = Some(key.to_string());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_are_classified_by_code_and_status() {
        assert_eq!(
            service_kind("GetObject", Some("NoSuchBucket"), 404),
            S3ErrorKind::NoSuchBucket
        );
        assert_eq!(
            service_kind("HeadBucket", None, 404),
            S3ErrorKind::NoSuchBucket
        );
        assert_eq!(
            service_kind("HeadObject", None, 404),
            S3ErrorKind::NoSuchKey
        );
        assert_eq!(
            service_kind("HeadBucket", None, 403),
            S3ErrorKind::AccessDenied
        );
        assert_eq!(
            service_kind("PutObject", Some("SignatureDoesNotMatch"), 403),
            S3ErrorKind::AccessDenied
        );
        assert_eq!(service_kind("GetObject", None, 503), S3ErrorKind::Service);
        assert_eq!(
            service_kind("HeadBucket", None, 301),
            S3ErrorKind::BadRequest
        );
    }

    #[test]
    fn transport_errors_are_classified_by_io_kind() {
        let tls = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad cert");
        assert_eq!(transport_kind(&tls), S3ErrorKind::Tls);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(transport_kind(&refused), S3ErrorKind::Unreachable);
    }
}
