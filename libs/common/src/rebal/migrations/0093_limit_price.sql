-- A worked leg's limit order keeps the price it was sized at, written with the order before it is sent:
-- it is sent at exactly that price, also again after a restart (never re-priced from a newer book under
-- the same client id). NULL: a market order.
ALTER TABLE execution.orders ADD COLUMN limit_price numeric CHECK (limit_price > 0);
