-- A mirror channel serves an upstream channel's packages by its rules: the rules' JSON
-- (url, allow, deny, min_age_days); NULL for a channel that takes uploads.
ALTER TABLE channels ADD COLUMN mirror TEXT;
