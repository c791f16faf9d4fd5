-- Aegis control plane schema, part 6: fleet-scale write paths.
--
-- Every Ack and every command push rewrites a deliveries row, and a row whose status changes
-- cannot be updated in place (status is in the partial indexes' predicates), so each write
-- also inserts into every index. deliveries_command_idx (0005) repeats the index behind
-- UNIQUE (command_id, agent_id) column for column; dropping it removes one index insert per
-- delivery write with no plan losing an index.
DROP INDEX IF EXISTS deliveries_command_idx;
