//! Damage of a stored file — its size, MD5, compressed or encrypted data not what its manifest
//! says — as an error carried inside I/O errors, and found again in a chain of causes.

use std::io;

/// A stored file that is not what its manifest says: its size, MD5 or compressed data.
#[derive(Debug, thiserror::Error)]
#[error("{name} is damaged: {reason}")]
pub struct FileDamaged {
    pub name: String,
    pub reason: String,
}

pub(super) fn damaged(name: &str, reason: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        FileDamaged {
            name: name.to_string(),
            reason,
        },
    )
}

/// The damage an error reports, found anywhere in its chain of causes (inside I/O errors too,
/// which is how a driver hands back the error of a stream it was reading).
pub fn damage_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a FileDamaged> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(damage) = error.downcast_ref::<FileDamaged>() {
            return Some(damage);
        }
        if let Some(inner) = error.downcast_ref::<io::Error>().and_then(|io| io.get_ref())
            && let Some(damage) = damage_in(inner)
        {
            return Some(damage);
        }
        next = error.source();
    }
    None
}
