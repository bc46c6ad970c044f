-- The autopilot (issue 13): policies versioned with who set them, when and what changed; what the
-- autopilot remembers and decides per portfolio; the notifications to deliver.

-- A version of a portfolio's autopilot policy (owner_kind 'portfolio') or of a fund's cycle schedule
-- ('fund'): the document as written, who set it, why, and what changed from the version before. The
-- latest version of an owner is in force.
CREATE TABLE policy_versions (
    owner_kind  text        NOT NULL CHECK (owner_kind IN ('portfolio', 'fund')),
    owner_id    text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    document    jsonb       NOT NULL,
    author      text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    changes     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (owner_kind, owner_id, version)
);

-- What the planner's autopilot remembers of a portfolio between messages (rebal.core.autopilot.Memory),
-- and its latest decision. One row per portfolio, locked while a decision is made (replicas take turns).
CREATE TABLE autopilot_state (
    portfolio_id   text PRIMARY KEY,
    memory         jsonb       NOT NULL,
    decision       jsonb,
    decided_at     timestamptz,
    updated_at     timestamptz NOT NULL
);

-- Every decision that differs from the one before it (a new reason, breach, blocker or trigger): the
-- autopilot's record of why it did or did not rebalance.
CREATE TABLE autopilot_decisions (
    decision_id    uuid PRIMARY KEY,
    portfolio_id   text        NOT NULL,
    decided_at     timestamptz NOT NULL,
    rebalance      boolean     NOT NULL,
    run_id         uuid,
    decision       jsonb       NOT NULL
);
CREATE INDEX autopilot_decisions_recent ON autopilot_decisions (portfolio_id, decided_at DESC);

-- A fund's scheduled cycles: the latest tick the planner ran a cycle for.
CREATE TABLE fund_schedule_ticks (
    fund_id    text PRIMARY KEY,
    last_tick  timestamptz NOT NULL
);

-- Notifications to deliver (an outbox: written in the transaction that decided them, delivered by the
-- monitor to every configured channel, retried, each channel once).
CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    kind            text        NOT NULL,
    portfolio_id    text        NOT NULL,
    created_at      timestamptz NOT NULL,
    payload         jsonb       NOT NULL,
    fanned_out      boolean     NOT NULL DEFAULT false
);
CREATE INDEX notifications_new ON notifications (created_at) WHERE NOT fanned_out;

CREATE TABLE notification_deliveries (
    notification_id uuid        NOT NULL REFERENCES notifications ON DELETE CASCADE,
    channel         text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
