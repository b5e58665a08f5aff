//! Persistence in MySQL/MariaDB: the client, the URL and rsec's tables.
//! Knows nothing of OpenSIPS; used by mod_init (start-up load) and by the
//! module's own persistence process, never by SIP workers.

pub mod mysql;
pub mod store;
pub mod url;

pub use mysql::{Conn, DbError};
pub use url::DbUrl;
