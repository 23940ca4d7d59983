-- corona-control schema 2: evidence clips fetched from the nodes, and the labels engineers give.

-- A clip asked for from the page; the node answers on clip/NAME (stored below) or clip/error.
CREATE TABLE clip_requests (
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    seq BIGINT NOT NULL,                -- the verdict's seq, from the name (a refusal may name it)
    requested_by TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL,
    error TEXT,                         -- the node's clip/error answer, when it refused
    PRIMARY KEY (node, name)
);

-- Only clips that were requested are stored: a publisher cannot fill the database with audio.
CREATE TABLE clips (
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    seq BIGINT NOT NULL,                -- the verdict the clip is the audio of
    received_at DOUBLE PRECISION NOT NULL,
    size BIGINT NOT NULL,
    flac {bytes} NOT NULL,
    PRIMARY KEY (node, name)
);
CREATE INDEX clips_node_seq ON clips (node, seq);

-- A person's judgement of one window: what `corona-control labels export` gives corona-train.
CREATE TABLE labels (
    node TEXT NOT NULL,
    seq BIGINT NOT NULL,
    label TEXT NOT NULL,                -- normal | anomalous
    labelled_by TEXT NOT NULL,
    labelled_at DOUBLE PRECISION NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (node, seq)
);

-- The clip a verdict names (its `clip` field), so the node page lists the windows with audio.
ALTER TABLE verdicts ADD COLUMN clip TEXT;
