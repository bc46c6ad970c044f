-- The paper exchange keeps a venue's documented rule for client order ids (Binance: "a unique id among
-- open orders"): an id is refused only while an order under it is open; once that order has ended, the
-- same id is accepted as a NEW order. So an order is keyed by its own id, and a client id may name several
-- orders over time (one open at most).
ALTER TABLE paper.fills DROP CONSTRAINT fills_exchange_client_order_id_fkey;
ALTER TABLE paper.orders DROP CONSTRAINT orders_pkey;
ALTER TABLE paper.orders ADD COLUMN order_id bigserial PRIMARY KEY;
ALTER TABLE paper.fills ADD COLUMN order_id bigint REFERENCES paper.orders (order_id);
UPDATE paper.fills f SET order_id = o.order_id
    FROM paper.orders o WHERE o.exchange = f.exchange AND o.client_order_id = f.client_order_id;
ALTER TABLE paper.fills ALTER COLUMN order_id SET NOT NULL;
CREATE UNIQUE INDEX orders_open_client_id ON paper.orders (exchange, client_order_id) WHERE status = 'open';
CREATE INDEX orders_client_id ON paper.orders (exchange, client_order_id, order_id);
CREATE INDEX orders_recent ON paper.orders (exchange, account, created_at);
CREATE INDEX fills_order_id ON paper.fills (order_id);
