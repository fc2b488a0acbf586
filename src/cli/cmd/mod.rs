//! One file per command: parse what is left of its flags, call one `ops` function, render.

pub mod alert;
pub mod anomaly;
pub mod config;
pub mod daemon;
pub mod describe;
pub mod install;
pub mod list;
pub mod prune;
pub mod restore;
pub mod restore_test;
pub mod run;
pub mod status;
pub mod verify;
