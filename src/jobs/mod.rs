//! The use cases: each plans first (pure, from the configuration and the repository), then runs
//! the plan and reports what happened per source.

pub mod backup;
mod backup_fanned;
pub mod backup_run;
pub mod copy;
pub mod events;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod purge;
pub mod replica;
pub mod replica_run;
pub mod restore;
mod restore_copy;
mod restore_describe;
pub mod restore_sql;
pub mod slots;
pub mod verify;
pub mod verify_deep;
