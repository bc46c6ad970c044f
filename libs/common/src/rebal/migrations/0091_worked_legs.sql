-- A leg worked as several orders (limit orders re-priced or taken, a large order in slices): each order
-- row keeps the leg's whole amount, so a restarted executor goes on with what is left of the leg, not of
-- the one order it finds last. NULL: the order is the whole leg (a plain market order).
ALTER TABLE execution.orders ADD COLUMN leg_amount numeric CHECK (leg_amount > 0);
