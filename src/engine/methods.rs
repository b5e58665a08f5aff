//! Per-method flood limits (`pike_method_density`, e.g.
//! `REGISTER:10,INVITE:20,OPTIONS:50`): requests of one method from one
//! source in the flood window, on top of the overall `pike_density`, so a
//! REGISTER storm is caught long before the general limit. Counted in a
//! table of their own (`max_tracked_ips` entries), probed only for the
//! methods listed.

use super::ip::IpKey;
use super::table::{Entry, Retention};
use super::window::SlidingWindow;

/// Methods that may have their own limit.
pub const MAX_METHODS: usize = 8;
/// Longest method name accepted.
pub const METHOD_MAX: usize = 16;

/// One method's limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodLimit {
    pub method: String,
    /// Requests allowed per flood window; the next one bans.
    pub density: u32,
}

/// Parses `REGISTER:10,INVITE:20`; the error names the bad item.
pub fn parse_method_density(s: &str) -> Result<Vec<MethodLimit>, String> {
    let mut out: Vec<MethodLimit> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (m, d) = item
            .split_once(':')
            .ok_or_else(|| format!("'{item}': expected METHOD:requests"))?;
        let m = m.trim();
        if m.is_empty()
            || m.len() > METHOD_MAX
            || !m
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b))
        {
            return Err(format!(
                "'{item}': '{m}' is not a SIP method name (1 to {METHOD_MAX} token characters)"
            ));
        }
        let density = match d.trim().parse::<u32>() {
            Ok(n) if (1..=65_534).contains(&n) => n,
            _ => {
                return Err(format!(
                    "'{item}': requests must be a number from 1 to 65534"
                ))
            }
        };
        if out.iter().any(|l| l.method.eq_ignore_ascii_case(m)) {
            return Err(format!("'{item}': {m} is listed twice"));
        }
        if out.len() == MAX_METHODS {
            return Err(format!("more than {MAX_METHODS} methods"));
        }
        out.push(MethodLimit {
            method: m.to_ascii_uppercase(),
            density,
        });
    }
    Ok(out)
}

/// Which listed method `method` is, if any (methods are matched without
/// regard to case: a scanner's `register` is still a REGISTER to count).
pub fn method_index(limits: &[MethodLimit], method: &[u8]) -> Option<usize> {
    limits
        .iter()
        .position(|l| l.method.as_bytes().eq_ignore_ascii_case(method))
}

/// A source (its tracked unit) and one of the listed methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MethodKey {
    pub unit: IpKey,
    pub method: u8,
    /// Counted apart per profile, like the sources' requests.
    pub profile: u8,
}

/// Requests of one method from one source, counted over its profile's
/// flood window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MethodCount {
    pub requests: SlidingWindow,
    /// Unix seconds of the last request counted: profiles' windows differ
    /// in length, so the table judges an entry by this (see
    /// `source::by_last_event`).
    pub last_s: u32,
}

impl Entry for MethodCount {
    /// The longest flood window of any profile, µs.
    type Ctx = u64;
    type Clock = (u64, u64);

    fn clock(now_us: u64, &keep_us: &u64) -> Self::Clock {
        (now_us, keep_us)
    }

    fn retention(&self, &(now_us, keep_us): &Self::Clock) -> Retention {
        super::source::by_last_event(self.last_s, now_us, keep_us)
    }
}

crate::shm_safe!(MethodKey, MethodCount);
