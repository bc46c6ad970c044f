-- A worked leg's limit order keeps the price it was sized at, written with the order before it is sent:
-- it is sent at exactly that price, also again after a restart (never re-priced from a newer book under
-- the same client id). NULL: a market order.
ALTER TABLE execution.orders ADD COLUMN limit_price numeric CHECK (limit_price > 0);

-- A worked buy's share of its group's budget: the quote (price buffer and fee included) the buys step
-- allotted the leg when it sized the group; no order of the leg ever makes it spend more, whatever the
-- price does between its slices and re-placements. NULL: not a worked buy, or sized before this column.
ALTER TABLE execution.orders ADD COLUMN leg_budget numeric CHECK (leg_budget >= 0);
