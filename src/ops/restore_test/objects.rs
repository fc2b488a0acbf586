//! The bucket half of a restore test: a sample of a bucket archive's objects (all of them with
//! `--full`) uploaded into a scratch bucket on the source S3 server by the object restore itself,
//! read back through S3, and compared with the object index: BLAKE3 (SHA-256 for older indexes),
//! content type, user metadata.
//!
//! The scratch bucket is emptied (objects and unfinished multipart uploads) and deleted by
//! [`remove_bucket`] whatever happened; buckets a killed test left (names checked by
//! [`super::compare::is_scratch_bucket`]) are removed by [`remove_leftovers`] first.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use aws_sdk_s3::Client;
use tokio::task::JoinSet;

use super::compare::{is_scratch_bucket, sample, BUCKET_PREFIX};
use crate::archive::{parse_index, IndexEntry, ObjectHasher};
use crate::catalog::{ArtifactRecord, BucketTestResult, ObjectMismatch};
use crate::error::{Error, Problem, Result, S3ErrorKind, ScratchRefusal};
use crate::ops::restore::objects::{restore_one, usable_index, Existing, KeyFilter};
use crate::ops::restore::ObjectRestoreOptions;
use crate::s3::{s3_error, with_key};
use crate::sink::local::BackupDir;

/// Uploads a sample of archive `a` into the new bucket `scratch`, reads it back and compares it
/// with the index. `sample_size` is `None` for every object. Fills `found` as it learns.
///
/// # Errors
/// [`Error::ScratchRefused`] when the bucket cannot be created for lack of rights;
/// [`Error::Verification`] with [`Problem::ObjectsDiffer`] when objects differ.
#[allow(clippy::too_many_arguments)]
pub(super) async fn test_archive(
    client: &Client,
    endpoint: &str,
    concurrency: usize,
    dir: &BackupDir,
    (a, stored): (&ArtifactRecord, &crate::ops::restore::Stored),
    scratch: &str,
    sample_size: Option<usize>,
    found: &mut BucketTestResult,
) -> Result<()> {
    create_bucket(client, endpoint, scratch).await?;
    let entries = {
        let (d, a, st) = (dir.path().to_path_buf(), a.clone(), stored.clone());
        crate::ops::blocking("reading the object index", move || {
            let index = usable_index(&d, &a, &st)?;
            let text = std::fs::read(index.path())
                .map_err(|e| Error::io("cannot read", index.path(), e))?;
            parse_index(&text).map_err(|p| Error::verification(&a.file, p))
        })
        .await?
    };
    found.objects = entries.len() as u64;
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    let chosen: HashSet<String> = sample(&keys, sample_size, scratch)
        .into_iter()
        .map(String::from)
        .collect();
    let opts = ObjectRestoreOptions {
        bucket: Some(scratch.to_string()),
        endpoint: None,
        prefix: None,
        existing: Existing::Overwrite,
        create_bucket: false,
        verify: false,
    };
    let filter = KeyFilter::Keys(Arc::new(chosen.clone()));
    restore_one(concurrency, dir, client, (a, stored), &opts, &filter).await?;
    let picked: Vec<IndexEntry> = entries
        .into_iter()
        .filter(|e| chosen.contains(&e.key))
        .collect();
    found.sampled = picked.len() as u64;
    found.mismatches = read_back_all(client, scratch, picked, concurrency).await?;
    if found.mismatches.is_empty() {
        return Ok(());
    }
    let detail = found
        .mismatches
        .iter()
        .take(5)
        .map(|m| format!("{:?}: {}", m.key, m.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::verification(
        &a.file,
        Problem::ObjectsDiffer {
            bucket: a.source.clone(),
            objects: found.mismatches.len(),
            detail,
        },
    ))
}

async fn create_bucket(client: &Client, endpoint: &str, bucket: &str) -> Result<()> {
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = s3_error("CreateBucket", bucket, e);
            if e.kind == S3ErrorKind::AccessDenied {
                return Err(Error::ScratchRefused {
                    refusal: ScratchRefusal::CreateBucket,
                    server: endpoint.to_string(),
                    what: format!("to create bucket {bucket}"),
                    detail: e.detail,
                    user: String::new(),
                });
            }
            Err(e.into())
        }
    }
}

/// Reads every object back, `concurrency` at a time; the differences found.
async fn read_back_all(
    client: &Client,
    bucket: &str,
    entries: Vec<IndexEntry>,
    concurrency: usize,
) -> Result<Vec<ObjectMismatch>> {
    let mut set: JoinSet<Result<Vec<ObjectMismatch>>> = JoinSet::new();
    let mut out = Vec::new();
    for m in entries {
        while set.len() >= concurrency {
            out.extend(joined(set.join_next().await)?);
        }
        let (c, b) = (client.clone(), bucket.to_string());
        set.spawn(async move { read_back(&c, &b, &m).await });
    }
    while let Some(r) = set.join_next().await {
        out.extend(joined(Some(r))?);
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn joined(
    r: Option<std::result::Result<Result<Vec<ObjectMismatch>>, tokio::task::JoinError>>,
) -> Result<Vec<ObjectMismatch>> {
    match r {
        None => Ok(Vec::new()),
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::step("reading objects back", e)),
    }
}

/// GETs one object and lists how it differs from its index entry.
async fn read_back(client: &Client, bucket: &str, m: &IndexEntry) -> Result<Vec<ObjectMismatch>> {
    let miss = |field: &str, detail: String| ObjectMismatch {
        key: m.key.clone(),
        field: field.into(),
        detail,
    };
    let out = match client.get_object().bucket(bucket).key(&m.key).send().await {
        Ok(o) => o,
        Err(e) => {
            let e = with_key(s3_error("GetObject", bucket, e), &m.key);
            if e.kind == S3ErrorKind::NoSuchKey {
                return Ok(vec![miss("missing", "not in the scratch bucket".into())]);
            }
            return Err(e.into());
        }
    };
    let mut found = Vec::new();
    if let Some(want) = &m.content_type {
        let got = out.content_type().unwrap_or_default();
        if got != want {
            found.push(miss(
                "content_type",
                format!("{got:?}, the index says {want:?}"),
            ));
        }
    }
    let got_meta: BTreeMap<String, String> = out
        .metadata()
        .map(|md| {
            md.iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if got_meta != m.metadata {
        found.push(miss(
            "metadata",
            format!("{got_meta:?}, the index says {:?}", m.metadata),
        ));
    }
    let mut body = out.body;
    let mut h = ObjectHasher::for_entry(m);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::step(format!("reading back {:?}", m.key), e))?;
        h.update(&chunk);
    }
    if let Err(e) = h.finish().check(m) {
        found.push(miss(
            e.algorithm,
            format!("{}, the index says {}", e.actual, e.recorded),
        ));
    }
    Ok(found)
}

/// Removes every scratch bucket a killed test left on the server.
pub(super) async fn remove_leftovers(client: &Client) -> Result<Vec<String>> {
    let listed = client
        .list_buckets()
        .send()
        .await
        .map_err(|e| s3_error("ListBuckets", BUCKET_PREFIX, e))?;
    let names: Vec<String> = listed
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .filter(|n| is_scratch_bucket(n))
        .map(String::from)
        .collect();
    for n in &names {
        tracing::info!(bucket = %n, "removing a scratch bucket a killed restore test left");
        remove_bucket(client, n).await?;
    }
    Ok(names)
}

/// Empties and deletes a scratch bucket; one that is not there is fine.
pub(super) async fn remove_bucket(client: &Client, bucket: &str) -> Result<()> {
    debug_assert!(is_scratch_bucket(bucket));
    let gone = |e: &crate::error::S3Error| e.kind == S3ErrorKind::NoSuchBucket;
    loop {
        let page = match client.list_objects_v2().bucket(bucket).send().await {
            Ok(p) => p,
            Err(e) => {
                let e = s3_error("ListObjectsV2", bucket, e);
                return if gone(&e) { Ok(()) } else { Err(e.into()) };
            }
        };
        let keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect();
        if keys.is_empty() {
            break;
        }
        let mut set: JoinSet<Result<()>> = JoinSet::new();
        for k in keys {
            let (c, b) = (client.clone(), bucket.to_string());
            set.spawn(async move {
                c.delete_object()
                    .bucket(&b)
                    .key(&k)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| Error::from(with_key(s3_error("DeleteObject", &b, e), &k)))
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| Error::step("deleting scratch objects", e))??;
        }
    }
    abort_uploads(client, bucket).await;
    match client.delete_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = s3_error("DeleteBucket", bucket, e);
            if gone(&e) {
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

/// Aborts multipart uploads a stopped test left unfinished (they would keep the bucket from
/// being deleted on some servers). Best effort: a server without the call has none.
async fn abort_uploads(client: &Client, bucket: &str) {
    let Ok(list) = client.list_multipart_uploads().bucket(bucket).send().await else {
        return;
    };
    for u in list.uploads() {
        if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(k)
                .upload_id(id)
                .send()
                .await;
        }
    }
}
