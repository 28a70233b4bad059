-- 011: Asterisk's own call detail records (issue #8, zero loss across an AMI
-- outage).  Asterisk does not replay AMI events: a call that starts and ends
-- while the CTI's AMI link is down is never seen on AMI.  Asterisk's
-- cdr_pgsql module (asterisk-conf/cdr_pgsql.conf) writes one row per CDR
-- into this table; after every resync the CTI turns the rows of calls it
-- never saw into call rows (close_reason 'recovered_from_cdr', cti/resync.py)
-- and takes the outcome of calls it closed as 'ended_while_disconnected'
-- from them.
--
-- cdr_pgsql reads this table's columns at load time and fills every column
-- whose name is a CDR field (names double-quoted in its INSERT; "end" is a
-- reserved word), so the names below are Asterisk's (Asterisk 12+ CDR):
-- start/answer/end are the party A channel's times, duration and billsec
-- seconds, disposition 'ANSWERED' | 'NO ANSWER' | 'BUSY' | 'FAILED' |
-- 'CONGESTION', dstchannel the party B channel (a queue member for a queue
-- call), linkedid the call's linkedid (the CTI's calls.linkedid).
-- Columns with a default that are not CDR fields (id) are left to PostgreSQL.
-- Times: cdr_pgsql writes local time without a zone; cdr_pgsql.conf sets
-- timezone=UTC and the Asterisk database role must have TimeZone UTC
-- (ALTER ROLE ... SET timezone = 'UTC'; see asterisk-conf/README.md).
CREATE TABLE IF NOT EXISTS cdr (
    id          bigserial PRIMARY KEY,
    start       timestamptz NOT NULL DEFAULT now(),
    answer      timestamptz,
    "end"       timestamptz NOT NULL DEFAULT now(),
    clid        text NOT NULL DEFAULT '',
    src         text NOT NULL DEFAULT '',
    dst         text NOT NULL DEFAULT '',
    dcontext    text NOT NULL DEFAULT '',
    channel     text NOT NULL DEFAULT '',
    dstchannel  text NOT NULL DEFAULT '',
    lastapp     text NOT NULL DEFAULT '',
    lastdata    text NOT NULL DEFAULT '',
    duration    integer NOT NULL DEFAULT 0,
    billsec     integer NOT NULL DEFAULT 0,
    disposition text NOT NULL DEFAULT '',
    amaflags    integer NOT NULL DEFAULT 0,
    accountcode text NOT NULL DEFAULT '',
    uniqueid    text NOT NULL DEFAULT '',
    linkedid    text NOT NULL DEFAULT '',
    peeraccount text NOT NULL DEFAULT '',
    sequence    integer NOT NULL DEFAULT 0,
    userfield   text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cdr_end_idx ON cdr ("end");
CREATE INDEX IF NOT EXISTS cdr_linkedid_idx ON cdr (linkedid);
