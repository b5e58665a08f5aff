-- Upgrades rsec's tables from version 1 to version 2 (ban notes, repeat
-- offenders, blocked accounts). Run once per shared database, with every node stopped or
-- still on the old rsec (which refuses version 2 at its next start):
--   mysql -u root opensips < include/rsec-mysql-upgrade-2.sql

ALTER TABLE rsec_bans ADD COLUMN note VARBINARY(64) NOT NULL DEFAULT '';
ALTER TABLE rsec_ban_changes ADD COLUMN note VARBINARY(64) NOT NULL DEFAULT '';
ALTER TABLE rsec_ban_changes ADD COLUMN user VARBINARY(64) NOT NULL DEFAULT '';

CREATE TABLE IF NOT EXISTS rsec_user_blocks (
    user VARBINARY(64) NOT NULL PRIMARY KEY,
    blocked BIGINT UNSIGNED NOT NULL,
    expires BIGINT UNSIGNED NOT NULL,
    node_id VARCHAR(64) NOT NULL,
    KEY rsec_user_blocks_expires (expires)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS rsec_offenders (
    address VARCHAR(64) NOT NULL PRIMARY KEY,
    offenses INT UNSIGNED NOT NULL,
    last_start BIGINT UNSIGNED NOT NULL,
    last_end BIGINT UNSIGNED NOT NULL,
    last_len INT UNSIGNED NOT NULL,
    node_id VARCHAR(64) NOT NULL,
    KEY rsec_offenders_last_end (last_end)
) ENGINE=InnoDB;

UPDATE rsec_version SET table_version = 2 WHERE table_name = 'rsec' AND table_version = 1;
