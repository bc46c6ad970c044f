-- The operators' targets (`rebal target set`, `PUT /portfolio/targets`): every version of a portfolio's
-- desired tree, who set it and when, kept forever; the latest one is in force (it takes precedence over
-- the optimizer's target file). A rollback is a new version with the tree of an older one (`based_on`).
CREATE TABLE target_versions (
    portfolio_id text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    tree         jsonb       NOT NULL,
    author       text        NOT NULL,
    note         text        NOT NULL DEFAULT '',
    based_on     integer,
    command_id   uuid        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (portfolio_id, version)
);
