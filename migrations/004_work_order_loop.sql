-- 004: the work-order closed loop (issue 5)
--
-- work_orders           + dispatch, feedback, callback, crew reports, extension, appeal, merging columns
-- work_order_events     append-only audit trail: who, when, what, from -> to state, payload
-- work_order_deadlines  durable SLA timers (claimed FOR UPDATE SKIP LOCKED by tickets.worker)
-- callback_tasks        the callback worklist (回访), soonest due first
-- fault_callers         callers attached to a known fault (并单) instead of a second crew
-- crew_messages         SMS / phone notifications to crews (outbox; the logging adapter marks them sent)
-- knowledge_articles    standard answers (知识库), seeded from tickets/data/knowledge.toml

-- Area-name comparison key; mirrors tickets.merging.area_key() and
-- outage_area_key() of 002 (kept separate so that this migration does not
-- depend on the outage registry).
CREATE FUNCTION ticket_area_key(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN replace(
    translate(translate(normalize(name, NFKC), E' \t\r\n\f\v', ''),
              'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
    '千伏', 'kv');

ALTER TABLE work_orders
    ADD COLUMN accepted_at        timestamptz,                  -- 受理: draft -> accepted (saved_at moves on each save)
    ADD COLUMN feeder             text NOT NULL DEFAULT '',     -- 线路 (from the customer, or typed)
    ADD COLUMN village            text NOT NULL DEFAULT '',     -- 村 / 街道
    ADD COLUMN area_class         text NOT NULL DEFAULT 'town'
                                  CHECK (area_class IN ('town', 'countryside', 'remote')),
    ADD COLUMN key_customer       boolean NOT NULL DEFAULT false,  -- any key flag at acceptance
    ADD COLUMN major_outage       boolean NOT NULL DEFAULT false,
    ADD COLUMN category_l1        text NOT NULL DEFAULT '',     -- complaint classification codes
    ADD COLUMN category_l2        text NOT NULL DEFAULT '',
    ADD COLUMN category_l3        text NOT NULL DEFAULT '',
    ADD COLUMN department         text NOT NULL DEFAULT '',     -- 派发部门
    ADD COLUMN assignee           text NOT NULL DEFAULT '',     -- named person
    ADD COLUMN assignee_phone     text NOT NULL DEFAULT '',
    ADD COLUMN dispatched_by      text NOT NULL DEFAULT '',
    ADD COLUMN dispatched_at      timestamptz,
    ADD COLUMN started_at         timestamptz,
    ADD COLUMN arrived_at         timestamptz,                  -- crew on site
    ADD COLUMN findings           text NOT NULL DEFAULT '',
    ADD COLUMN expected_repair_at timestamptz,
    ADD COLUMN repair_result      text NOT NULL DEFAULT ''
                                  CHECK (repair_result IN ('', 'restored', 'not_restored', 'customer_equipment')),
    ADD COLUMN repair_finished_at timestamptz,
    ADD COLUMN feedback_result    text NOT NULL DEFAULT '',
    ADD COLUMN feedback_by        text NOT NULL DEFAULT '',
    ADD COLUMN feedback_at        timestamptz,
    ADD COLUMN callback_result    text NOT NULL DEFAULT ''
                                  CHECK (callback_result IN ('', 'satisfied', 'unsatisfied', 'disputed', 'inconsistent')),
    ADD COLUMN callback_note      text NOT NULL DEFAULT '',
    ADD COLUMN callback_by        text NOT NULL DEFAULT '',
    ADD COLUMN callback_at        timestamptz,
    ADD COLUMN return_count       integer NOT NULL DEFAULT 0,
    ADD COLUMN last_return_reason text NOT NULL DEFAULT '',
    ADD COLUMN closed_at          timestamptz,
    ADD COLUMN close_note         text NOT NULL DEFAULT '',
    ADD COLUMN progress_note      text NOT NULL DEFAULT '',     -- extension (延期): progress,
    ADD COLUMN responsible_person text NOT NULL DEFAULT '',     --   responsible person
    ADD COLUMN responsible_phone  text NOT NULL DEFAULT '',     --   and phone
    ADD COLUMN extended_until     timestamptz,
    ADD COLUMN appeal_status      text NOT NULL DEFAULT ''
                                  CHECK (appeal_status IN ('', 'pending', 'upheld', 'rejected')),
    ADD COLUMN appeal_reason      text NOT NULL DEFAULT '',
    ADD COLUMN appeal_note        text NOT NULL DEFAULT '',
    ADD COLUMN appeal_filed_at    timestamptz,
    ADD COLUMN appeal_decided_at  timestamptz,
    ADD COLUMN merged_into_order_id bigint REFERENCES work_orders (id),  -- attached to this fault order
    ADD COLUMN merged_outage_id   bigint,                       -- or to this registry outage (002)
    ADD COLUMN merged_outage_no   text NOT NULL DEFAULT '',
    -- 有效投诉: a complaint whose appeal was upheld stays on record but does not count
    ADD COLUMN valid_complaint    boolean GENERATED ALWAYS AS
                                  (order_type = 'complaint' AND appeal_status <> 'upheld') STORED,
    ADD CONSTRAINT work_orders_merged_one CHECK (merged_into_order_id IS NULL OR merged_outage_id IS NULL),
    ADD CONSTRAINT work_orders_dispatch_named CHECK (
        status NOT IN ('dispatched', 'in_progress', 'feedback', 'callback')
        OR merged_into_order_id IS NOT NULL OR merged_outage_id IS NOT NULL
        OR (department <> '' AND assignee <> ''));

-- known open faults by area (duplicate-fault merging)
CREATE INDEX work_orders_open_fault_ta_idx ON work_orders (ticket_area_key(transformer_area))
    WHERE order_type = 'repair' AND status IN ('accepted', 'dispatched', 'in_progress')
      AND merged_into_order_id IS NULL AND merged_outage_id IS NULL AND transformer_area <> '';
CREATE INDEX work_orders_open_fault_feeder_idx ON work_orders (ticket_area_key(feeder))
    WHERE order_type = 'repair' AND status IN ('accepted', 'dispatched', 'in_progress')
      AND merged_into_order_id IS NULL AND merged_outage_id IS NULL AND feeder <> '';
CREATE INDEX work_orders_department_idx ON work_orders (department, status) WHERE department <> '';
CREATE INDEX work_orders_contact_phone_idx ON work_orders (contact_phone);
CREATE INDEX work_orders_merged_into_idx ON work_orders (merged_into_order_id) WHERE merged_into_order_id IS NOT NULL;

-- the audit trail: append-only
CREATE TABLE work_order_events (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES work_orders (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,                       -- agent id, department person, 'system', 'sla'
    event       text NOT NULL,                       -- past tense: OrderDispatched, SlaBreached ...
    from_status text NOT NULL DEFAULT '',
    to_status   text NOT NULL DEFAULT '',
    version     integer,                             -- the order's version after the change
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX work_order_events_order_idx ON work_order_events (order_id, id);

CREATE FUNCTION work_order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'work_order_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER work_order_events_no_update BEFORE UPDATE OR DELETE ON work_order_events
    FOR EACH ROW EXECUTE FUNCTION work_order_events_append_only();
CREATE TRIGGER work_order_events_no_truncate BEFORE TRUNCATE ON work_order_events
    FOR EACH STATEMENT EXECUTE FUNCTION work_order_events_append_only();

-- durable deadlines: pending -> warned -> breached; -> met / cancelled
CREATE TABLE work_order_deadlines (
    id           bigserial PRIMARY KEY,
    order_id     bigint NOT NULL REFERENCES work_orders (id),
    kind         text NOT NULL CHECK (kind IN ('dispatch', 'arrival', 'department_reply',
                                               'repair_feedback', 'callback')),
    due_at       timestamptz NOT NULL,
    warn_at      timestamptz NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'warned', 'breached', 'met', 'cancelled')),
    approximate  boolean NOT NULL DEFAULT false,     -- year unknown to the official calendar (Mon-Fri used)
    key_customer boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    warned_at    timestamptz,
    breached_at  timestamptz,
    met_at       timestamptz,
    cancelled_at timestamptz,
    fired_by     text NOT NULL DEFAULT '',           -- the worker that fired it last
    CHECK (warn_at <= due_at)
);
-- one live deadline of a kind per order (a returned order gets a new one after the old is met)
CREATE UNIQUE INDEX work_order_deadlines_live_uq ON work_order_deadlines (order_id, kind)
    WHERE state IN ('pending', 'warned');
CREATE INDEX work_order_deadlines_warn_idx ON work_order_deadlines (warn_at) WHERE state = 'pending';
CREATE INDEX work_order_deadlines_due_idx ON work_order_deadlines (due_at) WHERE state IN ('pending', 'warned');
CREATE INDEX work_order_deadlines_order_idx ON work_order_deadlines (order_id);

-- the callback worklist
CREATE TABLE callback_tasks (
    id             bigserial PRIMARY KEY,
    order_id       bigint NOT NULL REFERENCES work_orders (id),
    reason         text NOT NULL CHECK (reason IN ('feedback', 'fault_restored', 'outage_restored')),
    fault_order_id bigint REFERENCES work_orders (id),
    outage_id      bigint,
    not_before     timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    key_customer   boolean NOT NULL DEFAULT false,
    deferred       boolean NOT NULL DEFAULT false,   -- slipped under heavy load (never for key customers)
    approximate    boolean NOT NULL DEFAULT false,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'cancelled')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    done_at        timestamptz,
    done_by        text NOT NULL DEFAULT '',
    result         text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX callback_tasks_pending_uq ON callback_tasks (order_id) WHERE state = 'pending';
CREATE INDEX callback_tasks_due_idx ON callback_tasks (due_at) WHERE state = 'pending';

-- callers attached to a known fault
CREATE TABLE fault_callers (
    id               bigserial PRIMARY KEY,
    order_id         bigint NOT NULL REFERENCES work_orders (id),   -- the caller's own repair order
    fault_order_id   bigint REFERENCES work_orders (id),            -- the open fault it joined ...
    outage_id        bigint,                                        -- ... or the registry outage
    outage_no        text NOT NULL DEFAULT '',
    matched_on       text NOT NULL CHECK (matched_on IN ('transformer_area', 'village', 'feeder', 'manual')),
    matched_name     text NOT NULL DEFAULT '',
    customer_id      bigint REFERENCES customers (id),
    contact_name     text NOT NULL DEFAULT '',
    contact_phone    text NOT NULL DEFAULT '',
    major            boolean NOT NULL DEFAULT false,
    attached_at      timestamptz NOT NULL DEFAULT now(),
    attached_by      text NOT NULL DEFAULT '',
    restored_at      timestamptz,                                   -- power back: callback task made
    detached_at      timestamptz,
    CHECK ((fault_order_id IS NULL) <> (outage_id IS NULL))
);
CREATE UNIQUE INDEX fault_callers_live_uq ON fault_callers (order_id) WHERE detached_at IS NULL;
CREATE INDEX fault_callers_fault_idx ON fault_callers (fault_order_id) WHERE fault_order_id IS NOT NULL;
CREATE INDEX fault_callers_outage_waiting_idx ON fault_callers (outage_id)
    WHERE outage_id IS NOT NULL AND restored_at IS NULL AND detached_at IS NULL;

-- crew notifications (outbox: written in the order's transaction, delivered after commit)
CREATE TABLE crew_messages (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES work_orders (id),
    channel     text NOT NULL CHECK (channel IN ('sms', 'phone')),
    recipient   text NOT NULL DEFAULT '',
    phone       text NOT NULL,
    body        text NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    last_error  text NOT NULL DEFAULT '',
    adapter     text NOT NULL DEFAULT ''
);
CREATE INDEX crew_messages_pending_idx ON crew_messages (id) WHERE status = 'pending';
CREATE INDEX crew_messages_order_idx ON crew_messages (order_id, id);

-- standard answers
CREATE TABLE knowledge_articles (
    id         bigserial PRIMARY KEY,
    slug       text NOT NULL UNIQUE,
    topic      text NOT NULL,
    title      text NOT NULL,
    keywords   text NOT NULL DEFAULT '',
    body       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
