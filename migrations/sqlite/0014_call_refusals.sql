-- What the menu told a caller whose code matched an order it could not connect to.
ALTER TABLE calls ADD COLUMN refused TEXT;
ALTER TABLE calls ADD COLUMN refused_order_id TEXT;
