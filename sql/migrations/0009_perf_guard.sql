-- Guarantees, cheaper: the sync triggers raise a statement's G3 alerts as
-- one set (consistency._raise_alerts), so the per-call helper of 0004's
-- definitions goes; its replacement, _alert_unlinked(bigint[], bigint[],
-- integer[]), comes with sql/functions/guarantees.sql right after this.
DROP FUNCTION IF EXISTS consistency._alert_unlinked(bigint, bigint, integer);
