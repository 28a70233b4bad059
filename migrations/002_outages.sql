-- 002: the outage registry (停电信息, issue 4)
--
-- outages       one row per outage; status draft -> published -> restored | cancelled
-- outage_areas  the feeders (线路), transformer areas (台区), villages/streets (村/街道) it covers
-- outage_events append-only history: who changed what, when
--
-- The IVR asks, for one caller, "which published outage covers this
-- customer's feeder / transformer area / village right now?".  outage_areas
-- carries a copy of "is the outage published" (live, kept by a trigger) so
-- that a partial index holds only the ~1k live outages' areas, however many
-- restored ones accumulate over the years.

-- Comparison key of an area name; mirrors ivr.outages.area_key() (keep equal):
-- NFKC (full-width -> ASCII), ASCII whitespace removed, ASCII lower case,
-- 千伏 read as kv.  Only ASCII case folding, so the result does not depend on
-- the database's locale.
CREATE FUNCTION outage_area_key(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN replace(
    translate(translate(normalize(name, NFKC), E' \t\r\n\f\v', ''),
              'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
    '千伏', 'kv');

-- TD20261122-0042: per-day counter in China time
CREATE TABLE outage_no_counters (
    day  date PRIMARY KEY,
    last integer NOT NULL
);

CREATE TABLE outages (
    id                  bigserial PRIMARY KEY,
    outage_no           text NOT NULL UNIQUE,           -- TD20261122-0042; the IVR's OUTAGE_ID
    kind                text NOT NULL CHECK (kind IN ('planned', 'temporary', 'fault')),
    status              text NOT NULL DEFAULT 'draft'
                        CHECK (status IN ('draft', 'published', 'restored', 'cancelled')),
    reason              text NOT NULL CHECK (reason <> ''),   -- 停电原因
    description         text NOT NULL DEFAULT '',             -- 说明
    department          text NOT NULL DEFAULT '',             -- 发布单位
    start_at            timestamptz NOT NULL,
    expected_restore_at timestamptz NOT NULL,
    restored_at         timestamptz,
    published_at        timestamptz,
    cancelled_at        timestamptz,
    cancel_reason       text NOT NULL DEFAULT '',
    -- notice period (planned >= 7 working days, temporary >= 24 h): late is accepted, flagged
    late_notice         boolean NOT NULL DEFAULT false,
    late_notice_reason  text NOT NULL DEFAULT '',
    notice_estimated    boolean NOT NULL DEFAULT false,      -- year unknown to the official calendar
    -- the IVR announcement: text made on publish/change, WAV written by the TTS
    announcement        text NOT NULL DEFAULT '',
    prompt_status       text NOT NULL DEFAULT 'none'
                        CHECK (prompt_status IN ('none', 'pending', 'ready', 'failed')),
    announcement_path   text,
    prompt_error        text NOT NULL DEFAULT '',
    prompt_updated_at   timestamptz,
    version             integer NOT NULL DEFAULT 1,          -- optimistic locking
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (expected_restore_at > start_at),
    CHECK ((status = 'restored') = (restored_at IS NOT NULL)),
    CHECK (status = 'draft' OR published_at IS NOT NULL OR status = 'cancelled'),
    CHECK (prompt_status <> 'ready' OR announcement_path IS NOT NULL)
);
-- the page and the API: what is published, by time
CREATE INDEX outages_published_start_idx ON outages (start_at) WHERE status = 'published';
CREATE INDEX outages_start_idx ON outages (start_at DESC);

CREATE TABLE outage_areas (
    outage_id  bigint NOT NULL REFERENCES outages (id) ON DELETE CASCADE,
    area_type  text NOT NULL CHECK (area_type IN ('feeder', 'transformer_area', 'village')),
    name       text NOT NULL CHECK (outage_area_key(name) <> ''),
    name_key   text GENERATED ALWAYS AS (outage_area_key(name)) STORED,
    position   smallint NOT NULL DEFAULT 0,        -- the order the department listed them in
    live       boolean NOT NULL DEFAULT false,     -- = the outage is published (trigger below)
    PRIMARY KEY (outage_id, area_type, name_key)
);
-- the IVR hot path: (type, key) of a customer's area -> live outages
CREATE INDEX outage_areas_live_idx ON outage_areas (area_type, name_key) INCLUDE (outage_id) WHERE live;
-- history by area ("how often was this transformer area cut this year")
CREATE INDEX outage_areas_key_idx ON outage_areas (area_type, name_key);

CREATE FUNCTION outage_areas_sync_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.live := EXISTS (SELECT 1 FROM outages o WHERE o.id = NEW.outage_id AND o.status = 'published');
        RETURN NEW;
    END IF;
    UPDATE outage_areas SET live = (NEW.status = 'published')
    WHERE outage_id = NEW.id AND live IS DISTINCT FROM (NEW.status = 'published');
    RETURN NULL;
END $$;

CREATE TRIGGER outage_areas_live_on_insert BEFORE INSERT ON outage_areas
    FOR EACH ROW EXECUTE FUNCTION outage_areas_sync_live();
CREATE TRIGGER outages_status_sync_areas AFTER UPDATE OF status ON outages
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION outage_areas_sync_live();

-- append-only history
CREATE TABLE outage_events (
    id         bigserial PRIMARY KEY,
    outage_id  bigint NOT NULL REFERENCES outages (id),
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,                      -- who (person / department / 'tts')
    action     text NOT NULL CHECK (action IN ('created', 'published', 'restoration_changed', 'restored',
                                                'cancelled', 'prompt_ready', 'prompt_failed')),
    changes    jsonb NOT NULL DEFAULT '{}'::jsonb, -- {"field": [old, new], ...}
    note       text NOT NULL DEFAULT ''
);
CREATE INDEX outage_events_outage_idx ON outage_events (outage_id, id);

CREATE FUNCTION outage_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outage_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER outage_events_no_update BEFORE UPDATE OR DELETE ON outage_events
    FOR EACH ROW EXECUTE FUNCTION outage_events_append_only();
CREATE TRIGGER outage_events_no_truncate BEFORE TRUNCATE ON outage_events
    FOR EACH STATEMENT EXECUTE FUNCTION outage_events_append_only();

-- The IVR decision in one call: caller's phone lookup keys (or a typed account
-- number) -> up to p_max customers -> the most relevant live outage covering
-- any of them.  Relevance and order mirror ivr.outages.relevance() and
-- relevance_sort_key(): published; not restored; expected restoration later
-- than p_at - p_grace; started, or starting before p_at + p_window, or a
-- planned one starting before p_day_end (end of the caller's day, China
-- time); active first (latest expected restoration first), then imminent
-- (soonest start first); the most specific matched area (台区 > 村 > 线路).
-- plpgsql keeps the plan for the session; a generic plan is forced because
-- re-planning this statement costs more than running it (~2 ms vs ~0.3 ms).
CREATE FUNCTION ivr_outage_for_caller(p_keys text[], p_account text, p_max integer, p_at timestamptz,
                                      p_window interval, p_grace interval, p_day_end timestamptz)
RETURNS TABLE (
    c_id bigint, c_account_no text, c_transformer_area text, c_feeder text, c_village text, n_cand bigint,
    m_type text, m_name text, o_active boolean,
    o_id bigint, o_outage_no text, o_kind text, o_status text, o_reason text, o_description text,
    o_department text, o_start_at timestamptz, o_expected_restore_at timestamptz, o_restored_at timestamptz,
    o_published_at timestamptz, o_cancelled_at timestamptz, o_cancel_reason text, o_late_notice boolean,
    o_late_notice_reason text, o_notice_estimated boolean, o_announcement text, o_prompt_status text,
    o_announcement_path text, o_prompt_error text, o_version integer, o_created_at timestamptz,
    o_updated_at timestamptz, o_areas json)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH cand AS (
        SELECT c.id, c.account_no, c.transformer_area, c.feeder, c.village, m.rank, c.updated_at
        FROM (SELECT cp.customer_id, min(array_position(p_keys, cp.phone)) AS rank
              FROM customer_phones cp WHERE cp.phone = ANY (p_keys) GROUP BY cp.customer_id) m
        JOIN customers c ON c.id = m.customer_id
        UNION ALL
        SELECT c.id, c.account_no, c.transformer_area, c.feeder, c.village, 0, c.updated_at
        FROM customers c WHERE c.account_no = p_account
        ORDER BY 6, 7 DESC, 1 DESC
        LIMIT p_max
    ), hit AS (
        SELECT cand.*, x.*
        FROM cand LEFT JOIN LATERAL (
            SELECT o.id AS hit_id, a.area_type AS hit_type, a.name AS hit_name,
                   o.start_at <= p_at AS hit_active, o.expected_restore_at AS hit_restore, o.start_at AS hit_start
            FROM outage_areas a JOIN outages o ON o.id = a.outage_id
            WHERE a.live
              AND (   (a.area_type = 'transformer_area' AND a.name_key = outage_area_key(cand.transformer_area))
                   OR (a.area_type = 'village' AND a.name_key = outage_area_key(cand.village))
                   OR (a.area_type = 'feeder' AND a.name_key = outage_area_key(cand.feeder)))
              AND o.status = 'published'
              AND o.expected_restore_at > p_at - p_grace
              AND (o.start_at <= p_at + p_window OR (o.kind = 'planned' AND o.start_at < p_day_end))
            ORDER BY (o.start_at <= p_at) DESC,
                     CASE WHEN o.start_at <= p_at THEN o.expected_restore_at END DESC NULLS LAST,
                     o.start_at, o.id DESC,
                     CASE a.area_type WHEN 'transformer_area' THEN 0 WHEN 'village' THEN 1 ELSE 2 END
            LIMIT 1
        ) x ON true
    )
    SELECT h.id, h.account_no, h.transformer_area, h.feeder, h.village, (SELECT count(*) FROM cand),
           h.hit_type, h.hit_name, h.hit_active,
           o.id, o.outage_no, o.kind, o.status, o.reason, o.description, o.department, o.start_at,
           o.expected_restore_at, o.restored_at, o.published_at, o.cancelled_at, o.cancel_reason,
           o.late_notice, o.late_notice_reason, o.notice_estimated, o.announcement, o.prompt_status,
           o.announcement_path, o.prompt_error, o.version, o.created_at, o.updated_at,
           (SELECT coalesce(json_agg(json_build_array(a.area_type, a.name) ORDER BY a.position, a.area_type, a.name),
                            '[]')
            FROM outage_areas a WHERE a.outage_id = o.id)
    FROM hit h LEFT JOIN outages o ON o.id = h.hit_id
    ORDER BY (h.hit_id IS NULL), h.hit_active DESC,
             CASE WHEN h.hit_active THEN h.hit_restore END DESC NULLS LAST,
             h.hit_start, h.hit_id DESC, h.rank, h.updated_at DESC, h.id DESC
    LIMIT 1;
END $$;
