//! A minimal, blocking MySQL/MariaDB client over libmysqlclient/libmariadb
//! (mysqlclient-sys). Only the persistence process and mod_init use it;
//! SIP workers never do. All `unsafe` for the C client lives here.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_uint};
use std::ptr;

use mysqlclient_sys as ffi;

use super::url::DbUrl;

/// A client error: the server's or client's error number and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    pub code: u32,
    pub message: String,
}

impl DbError {
    fn new(code: u32, message: impl Into<String>) -> DbError {
        DbError {
            code,
            message: message.into(),
        }
    }

    /// Access denied, unknown database: configuration errors that retrying
    /// will not fix (1044, 1045, 1049, 1698).
    pub fn is_config_error(&self) -> bool {
        matches!(self.code, 1044 | 1045 | 1049 | 1698)
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MySQL error {}: {}", self.code, self.message)
    }
}

pub type Row = Vec<Option<String>>;

pub struct Conn {
    raw: *mut ffi::MYSQL,
}

// SAFETY: a connection is used by one thread at a time (it is not Sync).
unsafe impl Send for Conn {}

fn cstring(s: &str, what: &str) -> Result<CString, DbError> {
    CString::new(s).map_err(|_| DbError::new(0, format!("{what} contains a NUL byte")))
}

impl Conn {
    /// Connects with `timeout_s` for connecting, reading and writing, so a
    /// dead server costs the caller at most that long per call.
    pub fn connect(url: &DbUrl, timeout_s: u32) -> Result<Conn, DbError> {
        let host = cstring(&url.host, "host")?;
        let user = cstring(&url.user, "user")?;
        let pass = url
            .password
            .as_deref()
            .map(|p| cstring(p, "password"))
            .transpose()?;
        let db = cstring(&url.database, "database")?;
        let sock = url
            .socket
            .as_deref()
            .map(|s| cstring(s, "socket"))
            .transpose()?;
        // SAFETY: mysql_init(NULL) allocates a handle we own until Drop;
        // every pointer passed below outlives the calls.
        unsafe {
            let raw = ffi::mysql_init(ptr::null_mut());
            if raw.is_null() {
                return Err(DbError::new(2008, "out of memory in mysql_init"));
            }
            let conn = Conn { raw };
            let t: c_uint = timeout_s.max(1);
            for opt in [
                ffi::mysql_option::MYSQL_OPT_CONNECT_TIMEOUT,
                ffi::mysql_option::MYSQL_OPT_READ_TIMEOUT,
                ffi::mysql_option::MYSQL_OPT_WRITE_TIMEOUT,
            ] {
                ffi::mysql_options(raw, opt, (&t as *const c_uint).cast());
            }
            let ok = ffi::mysql_real_connect(
                raw,
                host.as_ptr(),
                user.as_ptr(),
                pass.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
                db.as_ptr(),
                url.port as c_uint,
                sock.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
                0,
            );
            if ok.is_null() {
                return Err(conn.error());
            }
            conn.exec("SET NAMES utf8mb4")?;
            Ok(conn)
        }
    }

    fn error(&self) -> DbError {
        // SAFETY: raw is a live handle; mysql_error returns a NUL-terminated
        // string owned by the handle.
        unsafe {
            let msg = CStr::from_ptr(ffi::mysql_error(self.raw) as *const c_char)
                .to_string_lossy()
                .into_owned();
            DbError::new(ffi::mysql_errno(self.raw), msg)
        }
    }

    /// Runs a statement that returns no rows; the number of affected rows.
    pub fn exec(&self, sql: &str) -> Result<u64, DbError> {
        // SAFETY: raw is live; the statement is passed with its length.
        unsafe {
            if ffi::mysql_real_query(self.raw, sql.as_ptr().cast(), sql.len() as _) != 0 {
                return Err(self.error());
            }
            // Drain a result set if the statement produced one.
            let res = ffi::mysql_store_result(self.raw);
            if !res.is_null() {
                ffi::mysql_free_result(res);
            }
            Ok(ffi::mysql_affected_rows(self.raw) as u64)
        }
    }

    /// Runs a query and returns every row as optional strings.
    pub fn query(&self, sql: &str) -> Result<Vec<Row>, DbError> {
        // SAFETY: as above; rows and lengths are read while `res` is alive
        // and copied out before it is freed.
        unsafe {
            if ffi::mysql_real_query(self.raw, sql.as_ptr().cast(), sql.len() as _) != 0 {
                return Err(self.error());
            }
            let res = ffi::mysql_store_result(self.raw);
            if res.is_null() {
                return if ffi::mysql_errno(self.raw) != 0 {
                    Err(self.error())
                } else {
                    Ok(Vec::new())
                };
            }
            let n = ffi::mysql_num_fields(res) as usize;
            let mut out = Vec::new();
            loop {
                let row = ffi::mysql_fetch_row(res);
                if row.is_null() {
                    break;
                }
                let lens = std::slice::from_raw_parts(ffi::mysql_fetch_lengths(res), n);
                let cells = std::slice::from_raw_parts(row, n);
                out.push(
                    cells
                        .iter()
                        .zip(lens)
                        .map(|(&c, &l)| {
                            (!c.is_null()).then(|| {
                                String::from_utf8_lossy(std::slice::from_raw_parts(
                                    c as *const u8,
                                    l as usize,
                                ))
                                .into_owned()
                            })
                        })
                        .collect(),
                );
            }
            ffi::mysql_free_result(res);
            Ok(out)
        }
    }

    /// True while the server answers.
    pub fn ping(&self) -> bool {
        // SAFETY: raw is live.
        unsafe { ffi::mysql_ping(self.raw) == 0 }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: raw came from mysql_init and is closed once.
        unsafe { ffi::mysql_close(self.raw) }
    }
}
