-- Several service processes on one PostgreSQL (cti.cluster).
-- calls.node: the node whose Asterisk carried the call (set from the
-- connection's hotline.node setting, so the INSERT itself is unchanged).
ALTER TABLE calls ADD COLUMN IF NOT EXISTS node text NOT NULL DEFAULT '';
ALTER TABLE calls ALTER COLUMN node SET DEFAULT coalesce(current_setting('hotline.node', true), '');
CREATE INDEX IF NOT EXISTS calls_node_queued_idx ON calls (node, queued_at);

-- hub messages too big for a NOTIFY payload: the notification carries the id
CREATE TABLE IF NOT EXISTS cluster_messages (
    id bigserial PRIMARY KEY,
    origin text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
