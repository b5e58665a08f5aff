//! What the tests share: the OpenSIPS harness, sipp runs, the SIP OPTIONS
//! client, the MI client and a private MariaDB.

pub mod mariadb;
pub mod mi;
pub mod opensips;
pub mod sip;
pub mod sipp;
