-- AllFrame CQRS event store, version 1.
--
-- Runs with `search_path` set to the application's schema only, so every name below is
-- created in that schema. The append function pins that search path (SET search_path FROM
-- CURRENT), so it finds its tables whatever the caller's search path is.

-- The single row holding the last assigned global position. Appends update it, which takes
-- its row lock until commit: position assignment and commit are serialised, so commit order
-- is position order (docs/decisions/0201-postgres-global-order.md). Aborted appends roll the
-- counter back, so positions have no gaps.
CREATE TABLE log_head (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint NOT NULL CHECK (position >= 0)
);
INSERT INTO log_head (id, position) VALUES (true, 0);

-- One row per stream: its current version (the version of its last event).
CREATE TABLE streams (
    stream_id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0)
);

-- The log. Exactly one of payload (JSON stores) and payload_bytes (binary stores) is set.
-- metadata is the core's binary form (allframe_cqrs_core::Metadata::encode_into), the exact
-- record; event_id and created_at repeat parts of it for SQL users and for the unique index.
CREATE TABLE events (
    position bigint PRIMARY KEY CHECK (position > 0),
    stream_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    payload jsonb,
    payload_bytes bytea,
    metadata bytea NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_one_payload CHECK ((payload IS NULL) <> (payload_bytes IS NULL))
);

-- The latest snapshot of each stream.
CREATE TABLE snapshots (
    stream_id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0),
    payload jsonb,
    payload_bytes bytea,
    taken_at_us bigint NOT NULL,
    CONSTRAINT snapshots_one_payload CHECK ((payload IS NULL) <> (payload_bytes IS NULL))
);

-- One append, in one statement (one round trip). p_expected: -1 any, -2 the stream must
-- exist, n >= 0 the stream must be at version n (0: must not exist). A failed check raises
-- SQLSTATE AFC01 with the actual version as DETAIL, which rolls back everything.
-- Exactly one of p_json (JSON stores) and p_bytes (binary stores) is not null.
CREATE FUNCTION append_events(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_json text[],
    p_bytes bytea[],
    p_metadata bytea[],
    p_created timestamptz[],
    p_channel text
) RETURNS TABLE (stream_version bigint, first_position bigint, last_position bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count bigint := cardinality(p_ids);
    v_current bigint;
    v_last bigint;
BEGIN
    -- Lock the stream (its row lock serialises appends to one stream) and bump its version.
    UPDATE streams SET version = version + v_count WHERE stream_id = p_stream
        RETURNING version - v_count INTO v_current;
    IF NOT FOUND THEN
        INSERT INTO streams (stream_id, version) VALUES (p_stream, v_count) ON CONFLICT (stream_id) DO NOTHING;
        IF FOUND THEN
            v_current := 0;
        ELSE
            UPDATE streams SET version = version + v_count WHERE stream_id = p_stream
                RETURNING version - v_count INTO v_current;
        END IF;
    END IF;
    IF (p_expected = -2 AND v_current = 0) OR (p_expected >= 0 AND v_current <> p_expected) THEN
        RAISE EXCEPTION USING ERRCODE = 'AFC01', MESSAGE = 'allframe: wrong expected version', DETAIL = v_current::text;
    END IF;
    -- Take the global position lock last, so it is held for as short a time as possible.
    UPDATE log_head SET position = position + v_count WHERE id RETURNING position INTO v_last;
    IF p_json IS NOT NULL THEN
        INSERT INTO events (position, stream_id, version, event_id, event_type, payload, metadata, created_at)
        SELECT v_last - v_count + t.n, p_stream, v_current + t.n, t.id, t.ty, t.body::jsonb, t.meta, t.ts
        FROM unnest(p_ids, p_types, p_json, p_metadata, p_created) WITH ORDINALITY AS t (id, ty, body, meta, ts, n);
    ELSE
        INSERT INTO events (position, stream_id, version, event_id, event_type, payload_bytes, metadata, created_at)
        SELECT v_last - v_count + t.n, p_stream, v_current + t.n, t.id, t.ty, t.body, t.meta, t.ts
        FROM unnest(p_ids, p_types, p_bytes, p_metadata, p_created) WITH ORDINALITY AS t (id, ty, body, meta, ts, n);
    END IF;
    IF p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, v_last::text);
    END IF;
    RETURN QUERY SELECT v_current + v_count, v_last - v_count + 1, v_last;
END
$$;
