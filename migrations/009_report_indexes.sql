-- 009: history reports (issue 6 item 3, queues/report_repo.py)
--
-- The queue figures of a period are summed over calls by queued_at (when
-- the caller entered the queue), as the wallboard's restart seed does
-- (queues/repository.py); a year report must not scan the whole table.
CREATE INDEX calls_queued_at_idx ON calls (queued_at) WHERE queued_at IS NOT NULL;
