-- Limit orders on the paper exchange: an order with a price rests (status 'open') until the moving price
-- reaches it (filled at its price) or it is cancelled; a post-only one is refused if it would trade at once.
-- NULL price: a market order, as before.
ALTER TABLE paper.orders ADD COLUMN price numeric CHECK (price > 0);
ALTER TABLE paper.orders ADD COLUMN post_only boolean NOT NULL DEFAULT false;
