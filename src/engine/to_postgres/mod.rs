//! MySQL/MariaDB → PostgreSQL (issue #14, in progress): a MySQL table as a copy records it
//! (`mysql_ddl`), its columns' PostgreSQL types (`types`), and its PostgreSQL definition
//! (`ddl`), a copy's values as PostgreSQL `COPY` text (`values`), the load of a full copy's files
//! (`load`), binary log row changes as PostgreSQL row changes (`rows`), a chain's replay
//! (`replay`) and the target that restores a MySQL chain into PostgreSQL (`target`). Following
//! the live binary log, and translating DDL, are not built yet.
pub mod catalog;
pub mod ddl;
mod follow;
mod follow_state;
mod load;
pub mod mysql_ddl;
mod replay;
pub mod rows;
mod target;
pub mod types;
pub mod values;

pub use ddl::{PgColumn, PgTable, translate};
pub use mysql_ddl::{MyTable, parse_table};
pub use target::MysqlIntoPostgres;
pub use types::Kind;
