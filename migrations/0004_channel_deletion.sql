-- A channel's deletion is begun in D1 (it is then served to no one) and ended there only once
-- its index and every object are gone: a deletion cut short can be run again, and the name
-- cannot be taken by a new channel while the old one's files remain.
ALTER TABLE channels ADD COLUMN deleting_at INTEGER;
