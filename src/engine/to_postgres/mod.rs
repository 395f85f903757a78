//! MySQL/MariaDB → PostgreSQL (issue #14, in progress): a MySQL table as a copy records it
//! (`mysql_ddl`), its columns' PostgreSQL types (`types`), and its PostgreSQL definition
//! (`ddl`), and a copy's values as PostgreSQL `COPY` text (`values`). The seed's data load and
//! the applier build on these; until they exist, `replica seed` refuses a MySQL copy for a
//! PostgreSQL target.

pub mod ddl;
pub mod mysql_ddl;
pub mod types;
pub mod values;

pub use ddl::{PgColumn, PgTable, translate};
pub use mysql_ddl::{MyTable, parse_table};
pub use types::Kind;
