-- 003: why the CTI closed a call itself (issue #3 resync), e.g.
-- 'ended_while_disconnected' when the AMI link was down while the call ended
-- and its Hangup was never seen.  Empty for calls ended by their own events.
ALTER TABLE calls ADD COLUMN close_reason text NOT NULL DEFAULT '';
