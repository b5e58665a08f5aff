//! Free-text notes on bans ("abuse ticket 4411"), kept beside the bans in
//! their own table so a tracked source's slot stays 64 bytes: only the few
//! bans that carry a note pay for one.

use super::table::{Entry, Retention};
use super::text::Text;

/// Longest note kept, in bytes.
pub const NOTE_MAX: usize = 64;

/// A ban's note.
pub type Note = Text<NOTE_MAX>;

/// The note of one ban, which it names by its creation time so that a
/// note is never shown on a later ban of the same target; it lapses with
/// its ban.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoteEntry {
    pub created_us: u64,
    /// 0 = with a ban until unbanned.
    pub expires_us: u64,
    pub note: Note,
}

impl Entry for NoteEntry {
    type Ctx = ();
    type Clock = u64;

    fn clock(now_us: u64, _: &()) -> u64 {
        now_us
    }

    fn retention(&self, &now_us: &u64) -> Retention {
        if self.created_us != 0 && (self.expires_us == 0 || self.expires_us > now_us) {
            Retention::Pinned
        } else {
            Retention::Free
        }
    }
}

crate::shm_safe!(NoteEntry);
