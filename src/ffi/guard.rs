//! The boundary guard: no panic ever unwinds into OpenSIPS.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic is logged at CRIT naming `what` and turned into
/// `on_panic()`. The fallback is built only when needed: an MI error reply
/// built up front and dropped unused would leak on every call.
pub fn guard<R>(what: &'static str, on_panic: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("non-string panic payload");
            crate::rsec_log!(
                Crit,
                "guard",
                "internal error in {}: {} (request refused, module state intact)",
                what,
                msg
            );
            on_panic()
        }
    }
}

/// Keeps Rust's default panic message off stderr inside OpenSIPS: the
/// guard logs it through OpenSIPS's logger instead, with the location.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        crate::rsec_log!(Crit, "panic", "panic at {}", loc);
    }));
}
