//! Short byte strings stored inline in shared-memory slots (rate-limit
//! keys, usernames, ban notes): a length and a fixed array, compared and
//! hashed by their used bytes only, so a lookup never reads the unused
//! tail.

/// At most `N` bytes (`N` below 256: the length is one byte).
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text {
            len: 0,
            bytes: [0; N],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Empty,
    /// Longer than the limit, which it names, by this many bytes.
    TooLong {
        len: usize,
        max: usize,
    },
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::Empty => write!(f, "empty"),
            TextError::TooLong { len, max } => {
                write!(f, "{len} bytes, longer than the {max}-byte limit")
            }
        }
    }
}

impl<const N: usize> Text<N> {
    const FITS: () = assert!(N < 256, "the length is one byte");
    pub const MAX: usize = N;

    /// `b`, refused when empty or longer than `N`.
    pub fn new(b: &[u8]) -> Result<Self, TextError> {
        if b.is_empty() {
            return Err(TextError::Empty);
        }
        if b.len() > N {
            return Err(TextError::TooLong {
                len: b.len(),
                max: N,
            });
        }
        Ok(Self::cut(b))
    }

    /// The first `N` bytes of `b` (possibly none).
    pub fn cut(b: &[u8]) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        let n = b.len().min(N);
        let mut t = Self::default();
        t.bytes[..n].copy_from_slice(&b[..n]);
        t.len = n as u8;
        t
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> PartialEq for Text<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for Text<N> {}

impl<const N: usize> std::hash::Hash for Text<N> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(self.as_bytes());
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

crate::shm_safe!(Text<255>, Text<64>);
