//! MySQL/MariaDB → PostgreSQL (issue #14): a MySQL table as a copy records it
//! (`mysql_ddl`, the MySQL engine's `create_table`), its columns' PostgreSQL types (`types`), and its PostgreSQL definition
//! (`ddl`), a copy's values as PostgreSQL `COPY` text (`values`), the load of a full copy's files
//! (`load`), binary log row changes as PostgreSQL row changes (`rows`), logged DDL
//! (`ddl_log`) and the table definitions kept in the target (`catalog`), a chain's replay
//! (`replay`), a replica following the live binary log (`follow`, `follow_state`) and the target
//! that restores a MySQL chain into PostgreSQL and follows a source there (`target`), and the
//! end of a replica (`detach`), its start-up validation (`validate`), and tables copied again
//! at a new position (`reload`) whose earlier changes the applier passes over (`reload_window`).

pub mod catalog;
pub mod ddl;
mod ddl_log;
mod detach;
mod follow;
mod follow_state;
mod load;
mod reload;
mod reload_window;
mod replay;
pub mod rows;
mod target;
pub mod types;
mod validate;
pub mod values;

pub use ddl::{PgColumn, PgTable, translate};
// The reading of a MySQL `CREATE TABLE` belongs to the MySQL engine; the translation reads it here.
pub use crate::engine::mysql::create_table as mysql_ddl;
pub use mysql_ddl::{MyTable, parse_table};
pub use target::MysqlIntoPostgres;
pub use types::Kind;
