-- Indexes for the usage view's filters and groupings (GET /admin/v1/usage?group_by=…): by day range, and by
-- virtual key within a day range. Idempotent.
CREATE INDEX IF NOT EXISTS usage_day ON usage (day);
CREATE INDEX IF NOT EXISTS usage_key_day ON usage (key_id, day);
