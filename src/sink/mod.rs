//! Where artifacts are stored: the local backup directory (and, later, off-site copies).

pub mod follow;
pub mod local;
pub mod remote;
