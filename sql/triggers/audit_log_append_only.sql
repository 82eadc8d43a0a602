-- Statement-level, so even an UPDATE or DELETE matching no row is refused:
-- the audit log has no legitimate writer but INSERT.
DROP TRIGGER IF EXISTS audit_log_append_only ON consistency.audit_log;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON consistency.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._audit_log_refuse_change();
