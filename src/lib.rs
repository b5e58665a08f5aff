//! rsec: an OpenSIPS 3.6 module that protects SIP platforms from floods,
//! password guessing and abuse.
//!
//! Layers, from the host inwards:
//! - [`ffi`]: the OpenSIPS ABI, hand-declared, and every `unsafe` that
//!   touches it (logging, export tables, the panic guard);
//! - `glue` (private): script functions, modparams and the timer, mapping
//!   OpenSIPS calls onto the engine;
//! - [`engine`]: the policy (windows, buckets, bans, tables), safe Rust that
//!   knows nothing of OpenSIPS;
//! - [`shm`]: the shared mapping and process-shared robust locks it runs on;
//! - [`db`]: MySQL persistence of bans, used off the SIP path.

pub mod db;
pub mod engine;
pub mod ffi;
mod glue;
pub mod shm;
