//! The persistence layer against a real MariaDB started by the test, and
//! db_url parsing. Runs on every machine with mariadb-server installed.

use rsec::db::store::{self, Logged, StoredBlock};
use rsec::db::{Conn, DbUrl};
use rsec::engine::queue::{Change, ChangeOp};
use rsec::engine::{Cidr, Note, Offense, Reason, UserKey};

use crate::support::mariadb;
use mariadb::MariaDb;

const S: u64 = 1_000_000;

#[test]
fn db_url_forms_and_errors() {
    let u = DbUrl::parse("mysql://opensips:s3cr%40t@db.example:3307/opensips").unwrap();
    assert_eq!(
        (
            u.user.as_str(),
            u.password.as_deref(),
            u.host.as_str(),
            u.port
        ),
        ("opensips", Some("s3cr@t"), "db.example", 3307)
    );
    assert_eq!(u.database, "opensips");
    assert_eq!(
        u.redacted(),
        "mysql://opensips:***@db.example:3307/opensips"
    );
    assert!(
        !format!("{u:?}").contains("s3cr"),
        "Debug must not show the password"
    );

    let u = DbUrl::parse("mysql://rsec@localhost/rsec?socket=/run/mysqld/mysqld.sock").unwrap();
    assert_eq!(
        (u.password.is_none(), u.port, u.socket.as_deref()),
        (true, 3306, Some("/run/mysqld/mysqld.sock"))
    );
    let u = DbUrl::parse("mysql://a:b@[::1]:3310/x").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 3310));

    for (bad, why) in [
        ("postgres://a:b@h/db", "mysql://"),
        ("mysql://a:b@h", "database"),
        ("mysql://a:b@h:notaport/db", "port"),
        ("mysql://:b@h/db", "user"),
        ("mysql://a:b@/db", "host"),
        ("mysql://a:b@h:0/db", "port"),
        ("mysql://a:b@h/db?sslmode=1", "unknown option"),
        ("mysql://a:%zz@h/db", "percent"),
    ] {
        let e = DbUrl::parse(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: '{e}' should mention {why}");
        assert!(!e.contains(":b@"), "error must not echo the password: {e}");
    }
}

#[test]
fn schema_check_refuses_missing_and_mismatched() {
    let Some(db) = MariaDb::start_new("schema_check_refuses_missing_and_mismatched", false) else {
        return;
    };
    let url = DbUrl::parse(&db.url()).unwrap();
    let c = Conn::connect(&url, 5).unwrap();
    let e = store::check_schema(&c).unwrap_err();
    assert!(
        e.contains("do not exist") && e.contains("rsec-mysql.sql"),
        "{e}"
    );
    db.sql(mariadb::SCHEMA);
    store::check_schema(&c).unwrap();
    db.sql("UPDATE rsec_version SET table_version = 7 WHERE table_name = 'rsec'");
    let e = store::check_schema(&c).unwrap_err();
    assert!(e.contains("version 7") && e.contains("needs 2"), "{e}");
}

#[test]
fn wrong_credentials_and_unreachable_server_are_told_apart() {
    let Some(db) = MariaDb::start_new(
        "wrong_credentials_and_unreachable_server_are_told_apart",
        true,
    ) else {
        return;
    };
    let bad = DbUrl::parse(&format!("mysql://rsec:WRONG@127.0.0.1:{}/rsec", db.port)).unwrap();
    let e = Conn::connect(&bad, 5)
        .err()
        .expect("wrong password must fail");
    assert_eq!(e.code, 1045, "{e}");
    assert!(e.is_config_error());
    let nodb = DbUrl::parse(&format!(
        "mysql://rsec:rsecpw@127.0.0.1:{}/nosuchdb",
        db.port
    ))
    .unwrap();
    let e = Conn::connect(&nodb, 5).err().unwrap();
    assert!(e.is_config_error(), "{e}");
    // A port nobody listens on: a connection error, retried, not a config error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = DbUrl::parse(&format!("mysql://rsec:rsecpw@127.0.0.1:{port}/rsec")).unwrap();
    let e = Conn::connect(&down, 2).err().unwrap();
    assert!(!e.is_config_error(), "{e}");
    assert!(
        matches!(e.code, 2002 | 2003),
        "connection refused is client error 2002/2003: {e}"
    );
}

#[test]
fn batches_write_rows_and_change_log_that_load_back() {
    let Some(db) = MariaDb::start_new("batches_write_rows_and_change_log_that_load_back", true)
    else {
        return;
    };
    let c = Conn::connect(&DbUrl::parse(&db.url()).unwrap(), 5).unwrap();
    let now = 1_800_000_000 * S;
    let ban = |t: &str, r, exp: u64| Change {
        op: ChangeOp::Ban,
        target: Cidr::parse(t).unwrap(),
        reason: r,
        created_us: now,
        expires_us: exp,
        ..Change::default()
    };
    let batch = vec![
        ban("192.0.2.7", Reason::Pike, now + 300 * S),
        ban("198.51.100.0/24", Reason::Manual, 0),
        ban("2001:db8::/64", Reason::Auth, now + 900 * S),
        ban("203.0.113.5", Reason::Pike, now + 10 * S),
        Change {
            op: ChangeOp::Unban,
            ..ban("192.0.2.7", Reason::Pike, now + 300 * S)
        },
    ];
    store::write_batch(&c, "node-a", &batch).unwrap();
    assert_eq!(db.sql("SELECT COUNT(*) FROM rsec_bans").trim(), "3");
    assert_eq!(
        db.sql("SELECT node_id FROM rsec_bans WHERE address = '2001:db8::/64'")
            .trim(),
        "node-a"
    );

    let (loaded, bad) = store::load_bans(&c, now / S + 60).unwrap();
    assert_eq!(bad, 0);
    let mut got: Vec<String> = loaded
        .iter()
        .map(|b| format!("{} {} {}", b.target, b.reason.as_str(), b.expires_s))
        .collect();
    got.sort();
    // 203.0.113.5 lapsed at +10 s, so it is not loaded at +60 s.
    assert_eq!(
        got,
        vec![
            format!("198.51.100.0/24 manual 0"),
            format!("2001:db8::/64 auth {}", now / S + 900)
        ]
    );

    let log = store::changes_since(&c, 0, 100).unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        matches!(log[4].what, Logged::Unban(b) if b.target.to_string() == "192.0.2.7"),
        "{:?}",
        log[4]
    );
    assert_eq!(store::last_change_id(&c).unwrap(), log[4].id);
    assert_eq!(store::changes_since(&c, log[2].id, 100).unwrap().len(), 2);

    // Expiry removes only the lapsed ban, and never logs a change.
    let exp = Change {
        op: ChangeOp::Expire,
        ..ban("203.0.113.5", Reason::Pike, now + 10 * S)
    };
    store::write_batch(&c, "node-a", &[exp]).unwrap();
    assert_eq!(db.sql("SELECT COUNT(*) FROM rsec_bans").trim(), "2");
    assert_eq!(store::changes_since(&c, 0, 100).unwrap().len(), 5);

    // A failing statement rolls the whole batch back.
    let before = db.sql("SELECT COUNT(*) FROM rsec_ban_changes");
    let err = store::write_batch(&c, "bad node'; DROP TABLE rsec_bans; --", &batch);
    assert!(err.is_err());
    assert_eq!(db.sql("SELECT COUNT(*) FROM rsec_ban_changes"), before);
    assert_eq!(db.sql("SELECT COUNT(*) FROM rsec_bans").trim(), "2");
}

#[test]
fn whitelist_rows_load_and_bad_rows_are_reported() {
    let Some(db) = MariaDb::start_new("whitelist_rows_load_and_bad_rows_are_reported", true) else {
        return;
    };
    db.sql("INSERT INTO rsec_whitelist (cidr, description) VALUES ('10.0.0.0/8', 'core'), ('2001:db8::/32', 'v6'), ('10.0.0.300', 'typo')");
    let c = Conn::connect(&DbUrl::parse(&db.url()).unwrap(), 5).unwrap();
    let (ok, bad) = store::load_whitelist(&c).unwrap();
    let mut ok: Vec<String> = ok.iter().map(|c| c.to_string()).collect();
    ok.sort();
    assert_eq!(ok, vec!["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(bad.len(), 1);
    assert!(bad[0].contains("10.0.0.300"));
}

#[test]
fn unix_socket_url_connects() {
    let Some(db) = MariaDb::start_new("unix_socket_url_connects", true) else {
        return;
    };
    let url = DbUrl::parse(&format!(
        "mysql://rsec:rsecpw@localhost/rsec?socket={}",
        db.socket().display()
    ))
    .unwrap();
    let c = Conn::connect(&url, 5).unwrap();
    store::check_schema(&c).unwrap();
}

#[test]
fn account_blocks_notes_and_histories_are_written_and_read_back() {
    let Some(db) = MariaDb::start_new(
        "account_blocks_notes_and_histories_are_written_and_read_back",
        true,
    ) else {
        return;
    };
    let c = Conn::connect(&DbUrl::parse(&db.url()).unwrap(), 5).unwrap();
    let now = 1_800_000_000 * S;
    // A username with bytes no SQL string could hold as they are.
    let user = UserKey::new(b"10'01\\\n\xff").unwrap();
    let note = Note::new(b"ticket '4411'; DROP TABLE rsec_bans; --").unwrap();
    let offense = Offense {
        offenses: 3,
        last_start_s: 1_800_000_000,
        last_end_s: 1_800_001_200,
        last_len_s: 1200,
    };
    let batch = vec![
        Change {
            op: ChangeOp::Block,
            user,
            created_us: now,
            expires_us: now + 300 * S,
            ..Change::default()
        },
        Change {
            op: ChangeOp::Ban,
            target: Cidr::parse("192.0.2.7").unwrap(),
            reason: Reason::Pike,
            created_us: now,
            expires_us: now + 1200 * S,
            note,
            offense,
            ..Change::default()
        },
        Change {
            op: ChangeOp::Unblock,
            user: UserKey::new(b"other").unwrap(),
            ..Change::default()
        },
    ];
    store::write_batch(&c, "node-a", &batch).unwrap();
    let blocks = store::load_user_blocks(&c, now / S).unwrap();
    assert_eq!(
        blocks,
        vec![StoredBlock {
            user,
            blocked_s: now / S,
            expires_s: now / S + 300
        }]
    );
    assert!(store::load_user_blocks(&c, now / S + 300)
        .unwrap()
        .is_empty());
    let (bans, _) = store::load_bans(&c, now / S).unwrap();
    assert_eq!(bans[0].note, note);
    assert_eq!(
        store::load_offenders(&c, now / S, 3600).unwrap(),
        vec![(Cidr::parse("192.0.2.7").unwrap(), offense)]
    );
    let log = store::changes_since(&c, 0, 10).unwrap();
    let what: Vec<Logged> = log.iter().map(|l| l.what).collect();
    assert!(matches!(what[0], Logged::Block(b) if b.user == user && b.expires_s == now / S + 300));
    assert!(matches!(what[1], Logged::Ban(b) if b.note == note));
    assert!(matches!(what[2], Logged::Unblock(u) if u.as_bytes() == b"other"));
    assert_eq!(db.sql("SELECT COUNT(*) FROM rsec_bans").trim(), "1");
}
