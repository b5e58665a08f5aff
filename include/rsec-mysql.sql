-- rsec persistence schema for MySQL / MariaDB, version 2.
-- Create it once per database shared by the nodes:
--   mysql -u root opensips < include/rsec-mysql.sql
-- rsec checks rsec_version at start-up and refuses any other version.
-- A database made with version 1: include/rsec-mysql-upgrade-2.sql.

CREATE TABLE IF NOT EXISTS rsec_version (
    table_name VARCHAR(32) NOT NULL PRIMARY KEY,
    table_version INT UNSIGNED NOT NULL
) ENGINE=InnoDB;

-- The bans in force: one row per address or prefix (e.g. 192.0.2.7,
-- 198.51.100.0/24, 2001:db8::/64). Times are Unix seconds; expires 0 means
-- until unbanned. Loaded at start-up by every node.
CREATE TABLE IF NOT EXISTS rsec_bans (
    address VARCHAR(64) NOT NULL PRIMARY KEY,
    reason VARCHAR(16) NOT NULL,
    created BIGINT UNSIGNED NOT NULL,
    expires BIGINT UNSIGNED NOT NULL,
    node_id VARCHAR(64) NOT NULL,
    -- The operator's or rule's note ("abuse ticket 4411"), up to 64 bytes.
    note VARBINARY(64) NOT NULL DEFAULT '',
    KEY rsec_bans_expires (expires)
) ENGINE=InnoDB;

-- Every ban and unban, in order: what the other nodes import every
-- db_sync_interval. Rows older than a day are pruned.
CREATE TABLE IF NOT EXISTS rsec_ban_changes (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    op VARCHAR(8) NOT NULL,
    address VARCHAR(64) NOT NULL,
    reason VARCHAR(16) NOT NULL,
    created BIGINT UNSIGNED NOT NULL,
    expires BIGINT UNSIGNED NOT NULL,
    node_id VARCHAR(64) NOT NULL,
    changed TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    note VARBINARY(64) NOT NULL DEFAULT '',
    -- For op 'block' / 'unblock': the account (address is empty).
    user VARBINARY(64) NOT NULL DEFAULT '',
    KEY rsec_ban_changes_changed (changed)
) ENGINE=InnoDB;

-- Repeat offenders: the last ban of every address or prefix banned by a
-- rule, kept after the ban ends so that the next one within
-- recidive_window is longer (ban_multiplier, up to ban_time_max). Loaded at
-- start-up; rows past recidive_window are pruned. last_end and last_len
-- are 0 for a ban until unbanned.
CREATE TABLE IF NOT EXISTS rsec_offenders (
    address VARCHAR(64) NOT NULL PRIMARY KEY,
    offenses INT UNSIGNED NOT NULL,
    last_start BIGINT UNSIGNED NOT NULL,
    last_end BIGINT UNSIGNED NOT NULL,
    last_len INT UNSIGNED NOT NULL,
    node_id VARCHAR(64) NOT NULL,
    KEY rsec_offenders_last_end (last_end)
) ENGINE=InnoDB;

-- Accounts blocked for failing authentication from many sources
-- (user_fail_threshold), until expires (Unix seconds). Loaded at start-up;
-- blocks and unblocks reach the other nodes through rsec_ban_changes.
CREATE TABLE IF NOT EXISTS rsec_user_blocks (
    user VARBINARY(64) NOT NULL PRIMARY KEY,
    blocked BIGINT UNSIGNED NOT NULL,
    expires BIGINT UNSIGNED NOT NULL,
    node_id VARCHAR(64) NOT NULL,
    KEY rsec_user_blocks_expires (expires)
) ENGINE=InnoDB;

-- Prefixes never counted or banned, in addition to the whitelist modparam.
-- Reloaded with the MI command sec_whitelist_reload.
CREATE TABLE IF NOT EXISTS rsec_whitelist (
    cidr VARCHAR(64) NOT NULL PRIMARY KEY,
    description VARCHAR(255) NOT NULL DEFAULT ''
) ENGINE=InnoDB;

INSERT INTO rsec_version (table_name, table_version) VALUES ('rsec', 2)
    ON DUPLICATE KEY UPDATE table_version = table_version;

-- Optional: profiles (named thresholds) loaded at start-up and by MI
-- sec_profile_reload, over those declared by modparam. settings is what
-- follows the name in modparam("rsec", "profile", "name: settings"), e.g.
-- 'pike_density=600; pike_method_density=INVITE:400'. This table may be
-- added to an existing version-2 database as it is.
CREATE TABLE IF NOT EXISTS rsec_profiles (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    settings VARCHAR(1024) NOT NULL DEFAULT ''
) ENGINE=InnoDB;
