-- Who a binding belongs to and which instance holds its flow, as plain columns, so that another
-- instance can find a device's binding by index (not by searching the JSON document) and hand
-- a check-sync to the instance that holds the flow (see src/cluster.rs).
ALTER TABLE bindings ADD COLUMN device TEXT;
ALTER TABLE bindings ADD COLUMN holder TEXT;
CREATE INDEX bindings_device ON bindings(device);
