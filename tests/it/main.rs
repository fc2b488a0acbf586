//! stackback's integration tests, in one binary (the ripgrep `tests/tests.rs` layout): the AWS
//! SDK is linked once, and one throwaway PostgreSQL cluster serves every test that only reads it.
//! Each test drives the compiled `stackback` binary against real services and checks the result
//! with tools stackback did not write. Harness: [`support`].

mod support;

mod anomaly;
mod backup;
mod bad_archive;
mod bad_input;
mod buckets;
mod daemon;
mod deploy;
mod deploy_stack;
mod encryption;
mod failures;
mod fault_corrupt;
mod fault_db;
mod fault_disk;
mod fault_s3;
mod faults;
mod field;
mod multimember;
mod notify;
mod offsite;
mod offsite_faults;
mod parallel_restore;
mod prune;
mod regress_files;
mod regress_restore;
mod regress_run;
mod restore;
mod restore_test;
mod restore_test_daemon;
mod security;
mod smtp;
mod snapshots;
mod soak;
mod status_page;
mod verify;
mod volume;
