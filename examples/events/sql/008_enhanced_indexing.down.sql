DROP INDEX CONCURRENTLY IF EXISTS event_participants_event_idx;
DROP INDEX CONCURRENTLY IF EXISTS events_type_idx;
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_start_idx;
