-- Backstop's shared store (`[store] url`): every node's events, and the
-- deliveries any live node may make. Applied by the agent at start
-- (src/cluster/migrate.rs), once, under an advisory lock.

-- Which database this is: a node that followed another one (restored,
-- recreated) starts following this one from its beginning.
CREATE TABLE cluster_meta (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO cluster_meta DEFAULT VALUES;

-- PostgreSQL's clock, in Unix milliseconds: leases and heartbeats are
-- compared on one clock, whatever the nodes' clocks say.
CREATE FUNCTION backstop_now_ms() RETURNS BIGINT
    LANGUAGE SQL VOLATILE
    AS $$ SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT $$;

-- Every event of every node, once (the id is the idempotency key), in the
-- order PostgreSQL took them. `body` is the event's JSON as the node
-- committed it.
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    call_id TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    -- The node that shipped it.
    node TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    inserted_ms BIGINT NOT NULL DEFAULT backstop_now_ms(),
    body TEXT NOT NULL
);
CREATE INDEX events_call ON events (call_id, seq);
CREATE INDEX events_node_kind ON events (node, kind);
CREATE INDEX events_lead ON events (lead_id, kind, seq);
-- Pruning reads the oldest events only.
CREATE INDEX events_inserted ON events (inserted_ms);

-- One row per event and shared sink (webhooks, text-backs). A worker claims
-- due rows with FOR UPDATE SKIP LOCKED and a lease; a call's events go out
-- in order (only its oldest pending one is due).
CREATE TABLE deliveries (
    seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    call_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms BIGINT NOT NULL,
    lease_until_ms BIGINT,
    leased_by TEXT,
    done_ms BIGINT,
    last_error TEXT,
    PRIMARY KEY (seq, sink)
);
CREATE INDEX deliveries_due ON deliveries (sink, state, next_ms);
-- The claim walks a sink's pending rows in order, never its delivered ones.
CREATE INDEX deliveries_pending ON deliveries (sink, seq) WHERE state = 'pending';
CREATE INDEX deliveries_pending_call ON deliveries (sink, call_id, seq) WHERE state = 'pending';
-- Pruning asks whether a call has anything pending at any sink.
CREATE INDEX deliveries_pending_any ON deliveries (call_id) WHERE state = 'pending';

-- The nodes' heartbeats. A node silent past `dead_after` is reaped by
-- exactly one survivor (one UPDATE takes the row), which closes its open calls.
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    reaped_ms BIGINT,
    reaped_by TEXT,
    -- Who had reaped it when its heartbeat cleared the mark (the heartbeat's answer).
    last_reaped_by TEXT
);

-- Recordings (`[store] recordings = "database"`): uploaded with the event
-- that names them, in its transaction, so a lead's links work from any node.
-- A node serving a link for a file it has not got fetches it from here.
CREATE TABLE recordings (
    file TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    created_ms BIGINT NOT NULL DEFAULT backstop_now_ms()
);

-- The text-back's decisions and the opt-outs, shared (src/textback/db.rs
-- has the same tables in each node's SQLite, with what each column means):
-- a caller is texted once across the cluster, and a STOP that reached any
-- node stops the texts from every node.
CREATE TABLE text_backs (
    event_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    number TEXT,
    sender TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'skipped', 'failed', 'retry', 'unknown')),
    reason TEXT,
    sid TEXT,
    sent_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (event_id, sink)
);
CREATE INDEX text_backs_number ON text_backs (number, sender, sent_ms);
CREATE TABLE sms_opt_outs (
    number TEXT NOT NULL,
    sender TEXT NOT NULL,
    opted_out BOOLEAN NOT NULL,
    keyword TEXT NOT NULL,
    account_sid TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (number, sender)
);
