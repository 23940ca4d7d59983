-- corona-control schema 1: what the collector stores and the API reads.
-- Written once for both databases; the runner substitutes the few words they spell differently:
-- {id} an auto-numbered primary key, {bytes} a byte string.
-- Times are Unix seconds (double precision): the same arithmetic and indexes in both, and no
-- time-zone conversion between a node's UTC stamps and the server's settings.

CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    first_seen DOUBLE PRECISION NOT NULL,
    status TEXT,
    status_at DOUBLE PRECISION,
    last_seq BIGINT,                    -- the highest verdict seq received
    last_verdict TEXT,                  -- that verdict, as published
    last_verdict_at DOUBLE PRECISION,   -- when it arrived (collector's clock)
    last_health TEXT,
    health_at DOUBLE PRECISION,
    alarm_id BIGINT,                    -- the node's current alarm state: its newest change
    alarm_seq BIGINT,
    alarm_since DOUBLE PRECISION
);

CREATE TABLE verdicts (
    node TEXT NOT NULL,
    seq BIGINT NOT NULL,
    window_end DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    level_dbfs DOUBLE PRECISION NOT NULL,
    mod_db DOUBLE PRECISION,            -- physics, when the node sent it: the plot's columns
    hum_db DOUBLE PRECISION,
    crackle_db DOUBLE PRECISION,
    payload TEXT NOT NULL,              -- the verdict JSON exactly as published
    PRIMARY KEY (node, seq)             -- the de-duplication key
);
-- A node's month of verdicts is one range scan of this index.
CREATE INDEX verdicts_node_window_end ON verdicts (node, window_end);
-- Retention deletes by arrival: replayed windows carry file positions (1970) as times.
CREATE INDEX verdicts_received_at ON verdicts (received_at);

-- The seqs received per node as closed ranges [first_seq, last_seq]; the holes between them are
-- the gaps. Kept up to date on every insert, so gaps never need a scan of the verdicts.
CREATE TABLE seq_ranges (
    node TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (node, first_seq)
);

CREATE TABLE alarms (
    id {id},
    node TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,           -- seq:N, or since:TIME:STATE from nodes that send no seq
    seq BIGINT,
    state TEXT NOT NULL,
    since TEXT NOT NULL,
    since_ts DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    replayed BOOLEAN NOT NULL,
    payload TEXT NOT NULL,
    acked_by TEXT,
    acked_at DOUBLE PRECISION,
    ack_note TEXT,
    UNIQUE (node, dedupe_key)
);
CREATE INDEX alarms_received_at ON alarms (received_at);

CREATE TABLE statuses (
    node TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX statuses_node_received_at ON statuses (node, received_at);

CREATE TABLE health (
    node TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX health_node_received_at ON health (node, received_at);
CREATE INDEX health_received_at ON health (received_at);

-- Messages that failed the gate: kept to be looked at, never shown raw.
CREATE TABLE quarantine (
    id {id},
    received_at DOUBLE PRECISION NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    size BIGINT NOT NULL,
    payload {bytes} NOT NULL            -- the first bytes only
);
CREATE INDEX quarantine_received_at ON quarantine (received_at);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,        -- sha256 of the cookie: a stolen database holds no login
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
