//! The S3 client, set up for S3-compatible servers (MinIO, Garage, moto, Ceph, R2, AWS).
//!
//! Path-style addressing (MinIO and most self-hosted servers have no per-bucket DNS), static
//! credentials, checksums only where the API requires them (Garage and older MinIO reject the
//! SDK's default streaming checksums over plain http), bounded timeouts and retries. SDK errors are
//! flattened into [`Error::S3`] with the service's own code and message.

use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::ObjectsConfig;
use crate::error::{Error, Result};

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

/// Turns an SDK error into [`Error::S3`]: the service's code and message when it answered, the
/// transport's reason (refused, timed out) when it did not.
pub fn s3_error<E>(op: &'static str, bucket: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status().as_u16();
            match (e.code(), e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                (Some(c), None) => format!("{c} (HTTP {status})"),
                // HEAD responses carry no body: the status is all there is.
                _ => match status {
                    403 => "AccessDenied (HTTP 403): the server refused the credentials or the signature".into(),
                    404 => "NoSuchBucket (HTTP 404): not found".into(),
                    301 | 307 | 400 => format!("HTTP {status}: the request was refused (a wrong MINIO_REGION or endpoint?)"),
                    _ => format!("HTTP {status} from the server"),
                },
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            // The context repeats itself as a Debug dump after the readable part: keep the latter.
            let full = DisplayErrorContext(&err).to_string();
            let readable = full.split(" (DispatchFailure(").next().unwrap_or(&full);
            format!("cannot reach the endpoint: {readable}")
        }
        _ => DisplayErrorContext(&err).to_string(),
    };
    Error::S3 {
        op,
        bucket: bucket.to_string(),
        detail,
    }
}
