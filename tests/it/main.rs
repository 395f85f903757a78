//! Integration tests of cairn against real servers: an S3-protocol server in this process and
//! the private PostgreSQL and MariaDB started by scripts/test.sh.

mod cli;
mod destination;
mod environment;
mod event_tables;
mod faults;
mod fleet;
mod history;
mod lock;
mod monitoring;
mod mysql;
mod mysql_binlog;
mod postgres;
mod postgres_ddl;
mod postgres_decoding;
mod postgres_incrementals;
mod postgres_load;
mod postgres_pitr;
mod postgres_slots;
mod proxy;
mod purge;
mod replica;
mod replica_run;
mod replica_run_pg;
mod restore_choice;
mod restore_selected;
mod restore_selected_pg;
mod safety;
mod status;
mod support;
mod terminal;
mod to_postgres;
mod to_postgres_replay;
mod to_postgres_replica;
mod verify;
mod verify_deep;
