//! stackback's integration tests, in one binary (the ripgrep `tests/tests.rs` layout): the AWS
//! SDK is linked once, and one throwaway PostgreSQL cluster serves every test that only reads it.
//! Each test drives the compiled `stackback` binary against real services and checks the result
//! with tools stackback did not write. Harness: [`support`].

mod support;

mod backup;
mod buckets;
mod daemon;
mod deploy;
mod deploy_stack;
mod failures;
mod faults;
mod field;
mod notify;
mod prune;
mod regress_files;
mod regress_restore;
mod regress_run;
mod restore;
mod smtp;
mod snapshots;
mod status_page;
mod verify;
mod volume;
