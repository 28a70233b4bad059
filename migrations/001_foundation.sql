-- 001: customers, calls, work orders (foundation, issue #2)

CREATE TABLE customers (
    id              bigserial PRIMARY KEY,
    account_no      text NOT NULL UNIQUE,          -- 户号
    name            text NOT NULL,                 -- 户名
    address         text NOT NULL DEFAULT '',      -- 用电地址
    transformer_area text NOT NULL DEFAULT '',     -- 台区
    feeder          text NOT NULL DEFAULT '',      -- 线路 (10 kV feeder)
    village         text NOT NULL DEFAULT '',      -- 村 / 街道
    area_class      text NOT NULL DEFAULT 'town'
                    CHECK (area_class IN ('town', 'countryside', 'remote')),  -- 城区/农村/偏远山区
    customer_class  text NOT NULL DEFAULT 'residential',  -- 居民/非居民/大工业 ...
    -- key-customer flags (DOMAIN.md: these callbacks never slip)
    dedicated_transformer boolean NOT NULL DEFAULT false,  -- 专变用户
    large_customer  boolean NOT NULL DEFAULT false,        -- 大客户
    sensitive       boolean NOT NULL DEFAULT false,        -- 敏感客户
    high_rise       boolean NOT NULL DEFAULT false,        -- 高层住宅
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_transformer_area_idx ON customers (transformer_area);
CREATE INDEX customers_feeder_idx ON customers (feeder);

-- one customer, several numbers; one number may belong to several accounts
CREATE TABLE customer_phones (
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    phone       text NOT NULL,        -- normalised national form: 13800138000, 07735551234
    kind        text NOT NULL DEFAULT 'mobile' CHECK (kind IN ('mobile', 'landline', 'other')),
    PRIMARY KEY (customer_id, phone)
);
CREATE INDEX customer_phones_phone_idx ON customer_phones (phone);

-- one row per call (keyed by Asterisk's linkedid)
CREATE TABLE calls (
    linkedid        text PRIMARY KEY,
    caller_num      text NOT NULL DEFAULT '',     -- as received (hostile: display as text)
    caller_num_norm text NOT NULL DEFAULT '',
    caller_name     text NOT NULL DEFAULT '',
    customer_id     bigint REFERENCES customers (id),
    ivr_choice      text NOT NULL DEFAULT '',
    outage_id       text NOT NULL DEFAULT '',
    queue           text NOT NULL DEFAULT '',
    agent           text NOT NULL DEFAULT '',
    state           text NOT NULL DEFAULT 'new',
    outcome         text NOT NULL DEFAULT '',     -- answered / abandoned / ...
    hangup_cause    integer,
    started_at      timestamptz NOT NULL DEFAULT now(),
    queued_at       timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    hold_time_s     integer,
    talk_time_s     integer,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_started_at_idx ON calls (started_at);

CREATE SEQUENCE work_order_seq;

-- 工单
CREATE TABLE work_orders (
    id              bigserial PRIMARY KEY,
    order_no        text NOT NULL UNIQUE,          -- e.g. GD20261122000042
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'accepted', 'dispatched', 'in_progress',
                                      'feedback', 'callback', 'closed', 'cancelled')),
    order_type      text NOT NULL DEFAULT ''
                    CHECK (order_type IN ('', 'repair', 'complaint', 'report', 'enquiry',
                                          'service_request', 'opinion', 'suggestion', 'praise')),
    ivr_choice      text NOT NULL DEFAULT '',
    linkedid        text REFERENCES calls (linkedid),
    agent           text NOT NULL DEFAULT '',
    queue           text NOT NULL DEFAULT '',
    caller_num      text NOT NULL DEFAULT '',
    caller_num_norm text NOT NULL DEFAULT '',
    caller_name     text NOT NULL DEFAULT '',
    customer_id     bigint REFERENCES customers (id),
    -- snapshot of the customer at the time of the call (the customer row may change later)
    customer_snapshot jsonb NOT NULL DEFAULT '{}'::jsonb,
    contact_name    text NOT NULL DEFAULT '',
    contact_phone   text NOT NULL DEFAULT '',
    address         text NOT NULL DEFAULT '',
    transformer_area text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',      -- 故障现象 / 诉求内容
    outage_id       text NOT NULL DEFAULT '',
    version         integer NOT NULL DEFAULT 1,    -- optimistic locking
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    saved_at        timestamptz
);
CREATE INDEX work_orders_customer_idx ON work_orders (customer_id, created_at DESC);
CREATE INDEX work_orders_caller_num_idx ON work_orders (caller_num_norm, created_at DESC);
CREATE INDEX work_orders_linkedid_idx ON work_orders (linkedid);
-- at most one screen-pop draft per call and agent
CREATE UNIQUE INDEX work_orders_call_agent_uq ON work_orders (linkedid, agent) WHERE linkedid IS NOT NULL;
