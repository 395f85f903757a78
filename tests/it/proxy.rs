//! A TCP proxy in front of the private MariaDB that damages the replication stream on its way
//! to cairn: it flips a byte of a rows event, or drops one, so the tests can prove capture's
//! CRC32 and continuity checks catch what a faulty network or server would do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the `nth` rows event (counting from 1) of a binary log dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes everything unchanged.
    None,
    /// Flips one bit in the event's row data.
    FlipByte { nth: u32 },
    /// Leaves the event out (later packets renumbered, so the protocol stays valid).
    Drop { nth: u32 },
}

/// A proxy listening on 127.0.0.1; its port replaces the server's in a URL.
pub struct Proxy {
    pub port: u16,
    /// Rows events the dump connections have passed or damaged so far.
    pub rows_events: Arc<AtomicU32>,
}

/// Starts a proxy to `server` (`host:port`) applying `fault` to each binary log dump.
pub async fn start(server: String, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rows_events = Arc::new(AtomicU32::new(0));
    let counter = rows_events.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(&server).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(relay(client, upstream, fault, counter));
        }
    });
    Proxy { port, rows_events }
}

/// Reads one protocol packet (4-byte header, payload); `None` at the end of the stream.
async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.ok()?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], payload))
}

async fn write_packet(stream: &mut (impl AsyncWriteExt + Unpin), sequence: u8, payload: &[u8]) -> bool {
    let length = (payload.len() as u32).to_le_bytes();
    let header = [length[0], length[1], length[2], sequence];
    stream.write_all(&header).await.is_ok() && stream.write_all(payload).await.is_ok()
}

async fn relay(client: TcpStream, upstream: TcpStream, fault: Fault, counter: Arc<AtomicU32>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = upstream.into_split();
    let dumping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_dump = dumping.clone();
    // Client to server: unchanged, watching for the dump command.
    tokio::spawn(async move {
        while let Some((sequence, payload)) = read_packet(&mut client_read).await {
            // COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID
            if sequence == 0 && matches!(payload.first(), Some(0x12 | 0x1e)) {
                seen_dump.store(true, Ordering::SeqCst);
            }
            if !write_packet(&mut server_write, sequence, &payload).await {
                break;
            }
        }
    });
    // Server to client: a dump's events are packets `0x00` + event; the event's type is at 4.
    let mut dropped: u8 = 0;
    while let Some((sequence, mut payload)) = read_packet(&mut server_read).await {
        let is_rows = dumping.load(Ordering::SeqCst)
            && payload.len() > 1 + 19 + 8
            && payload[0] == 0x00
            && matches!(payload[1 + 4], 23..=25 | 30..=32);
        if is_rows {
            let nth = counter.fetch_add(1, Ordering::SeqCst) + 1;
            match fault {
                Fault::FlipByte { nth: target } if nth == target => {
                    // A byte of the row data, before the CRC32 that ends the event.
                    let at = payload.len() - 6;
                    payload[at] ^= 0x10;
                }
                Fault::Drop { nth: target } if nth == target => {
                    dropped = dropped.wrapping_add(1);
                    continue;
                }
                _ => {}
            }
        }
        if !write_packet(&mut client_write, sequence.wrapping_sub(dropped), &payload).await {
            break;
        }
    }
}
