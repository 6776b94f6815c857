//! Scans: reading a tenant into a snapshot, evaluating the catalogue, publishing what changed,
//! the schedule and its workers, and ScanService.

pub mod access;
pub mod api;
pub mod collect;
pub mod mailboxes;
pub mod results;
pub mod runner;
pub mod scheduler;
pub mod store;
pub mod users;
