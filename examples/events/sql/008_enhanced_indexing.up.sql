CREATE INDEX CONCURRENTLY IF NOT EXISTS events_tenant_start_idx ON events (tenant_id, start_date);
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_type_idx ON events (event_type);
CREATE INDEX CONCURRENTLY IF NOT EXISTS event_participants_event_idx ON event_participants (event_id);
