//! The private servers of the test environment are real and configured as later tests need.

use crate::support::{mysql_url, postgres_url};
use mysql_async::prelude::Queryable;

#[tokio::test]
async fn postgres_is_reachable_with_logical_wal() {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SHOW wal_level", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
}

#[tokio::test]
async fn mariadb_is_reachable_with_a_row_binlog() {
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_url()).unwrap())
        .await
        .unwrap();
    let (log_bin, format, image, server_id): (u8, String, String, u32) = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((log_bin, format.as_str(), image.as_str()), (1, "ROW", "FULL"));
    assert_ne!(server_id, 0);
    conn.disconnect().await.unwrap();
}
