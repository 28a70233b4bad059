-- 008: call recordings (issue 7)
--
-- recordings             one row per MixMonitor file: where it is (relative to the
--                        recordings root), what it is (duration, size, sha256), its
--                        state, the compact copy, retention and legal hold
-- recording_access_log   append-only audit: every listen, download and denial
-- recording_scores       quality scores (质检评分) given by supervisors
--
-- A recording belongs to a call by linkedid (calls.linkedid) and to the work
-- orders of that call through work_orders.linkedid (see recording_orders).
-- No foreign key to calls: a recording may be indexed before the call row
-- exists (or for a call the CTI never saw, e.g. after a resync).

CREATE TABLE recordings (
    id                  bigserial PRIMARY KEY,
    path                text NOT NULL DEFAULT '',       -- relative to the recordings root; '' when rejected
    linkedid            text NOT NULL,                   -- the call (calls.linkedid)
    uniqueid            text NOT NULL,                   -- the recorded channel
    channel             text NOT NULL DEFAULT '',
    queue               text NOT NULL DEFAULT '',
    agent               text NOT NULL DEFAULT '',
    state               text NOT NULL DEFAULT 'recording'
                        CHECK (state IN ('recording', 'indexed', 'missing', 'corrupt', 'rejected',
                                         'transcoded', 'expired')),
    error               text NOT NULL DEFAULT '',        -- why missing/corrupt/rejected, last transcode error
    started_at          timestamptz NOT NULL DEFAULT now(),
    ended_at            timestamptz,
    end_reason          text NOT NULL DEFAULT '',        -- stopped (MixMonitorStop) / hangup / replaced
    indexed_at          timestamptz,
    duration_s          double precision,
    size_bytes          bigint,
    sha256              text NOT NULL DEFAULT '',
    format              text NOT NULL DEFAULT '',        -- e.g. wav/pcm_s16le/8000/1
    -- the compact copy: the original is removed only once the copy is verified
    transcoded_path     text NOT NULL DEFAULT '',
    transcoded_format   text NOT NULL DEFAULT '',
    transcoded_size     bigint,
    transcoded_sha256   text NOT NULL DEFAULT '',
    transcoded_verified boolean NOT NULL DEFAULT false,
    transcoded_at       timestamptz,
    original_removed    boolean NOT NULL DEFAULT false,
    transcode_attempts  integer NOT NULL DEFAULT 0,
    transcode_after     timestamptz NOT NULL DEFAULT now(),  -- next attempt (durable, claimed with SKIP LOCKED)
    transcode_claimed_until timestamptz,
    -- retention: retention_until = ended_at + retention days; complaint/report
    -- recordings are held (legal_hold_until) until their order is closed plus
    -- the retention period; a supervisor may set a longer hold
    retention_until     timestamptz,
    legal_hold_until    timestamptz,
    legal_hold_reason   text NOT NULL DEFAULT '',
    expired_at          timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recordings_path_relative CHECK (path = '' OR (path !~ '(^/|(^|/)\.\.(/|$))'))
);
CREATE UNIQUE INDEX recordings_path_uq ON recordings (path) WHERE path <> '';
CREATE INDEX recordings_linkedid_idx ON recordings (linkedid);
CREATE INDEX recordings_agent_idx ON recordings (agent, started_at DESC);
CREATE INDEX recordings_transcode_idx ON recordings (transcode_after) WHERE state = 'indexed';
CREATE INDEX recordings_retention_idx ON recordings (retention_until) WHERE state IN ('indexed', 'transcoded', 'missing', 'corrupt');

-- a recording's work orders: those of its call
CREATE VIEW recording_orders AS
    SELECT r.id AS recording_id, w.id AS order_id, w.order_no, w.order_type, w.status,
           w.department, w.assignee, w.agent AS order_agent, w.closed_at, w.updated_at
      FROM recordings r JOIN work_orders w ON w.linkedid = r.linkedid;

-- who listened to what: append-only
CREATE TABLE recording_access_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    recording_id  bigint REFERENCES recordings (id),
    username      text NOT NULL,
    role          text NOT NULL DEFAULT '',
    action        text NOT NULL CHECK (action IN ('listen', 'download', 'metadata', 'denied', 'unavailable')),
    byte_range    text NOT NULL DEFAULT '',            -- the Range header as sent ('' = whole file)
    status        integer,                             -- HTTP status answered
    remote        text NOT NULL DEFAULT '',
    detail        text NOT NULL DEFAULT ''
);
CREATE INDEX recording_access_log_rec_idx ON recording_access_log (recording_id, id);
CREATE INDEX recording_access_log_user_idx ON recording_access_log (username, at DESC);

CREATE FUNCTION recording_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'recording_access_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER recording_access_log_no_update BEFORE UPDATE OR DELETE ON recording_access_log
    FOR EACH ROW EXECUTE FUNCTION recording_access_log_append_only();
CREATE TRIGGER recording_access_log_no_truncate BEFORE TRUNCATE ON recording_access_log
    FOR EACH STATEMENT EXECUTE FUNCTION recording_access_log_append_only();

-- 质检评分
CREATE TABLE recording_scores (
    id            bigserial PRIMARY KEY,
    recording_id  bigint NOT NULL REFERENCES recordings (id),
    agent         text NOT NULL,                       -- the scored agent (recordings.agent at scoring time)
    supervisor    text NOT NULL,
    score         integer NOT NULL CHECK (score BETWEEN 0 AND 100),
    comment       text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
    criteria      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recording_scores_agent_idx ON recording_scores (agent, created_at);
CREATE INDEX recording_scores_recording_idx ON recording_scores (recording_id);
