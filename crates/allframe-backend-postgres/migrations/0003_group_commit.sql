-- AllFrame CQRS event store, version 3: group commit (docs/decisions/0203-postgres-group-commit.md).
--
-- append_group does the appends of several callers in one statement and one transaction: one
-- round trip, one commit, one WAL flush for all of them. Each append is checked on its own:
-- one whose expected version does not match is reported in its row of the result and writes
-- nothing, while the others of the group are stored. Global order is kept exactly as by
-- append_events (decision 0201): positions are taken from the log_head row, whose lock is held
-- until commit, so the two functions can serve one store at once (processes of an older
-- version go on calling append_events).
--
-- Arguments: per append, its stream, expected version (-1 any, -2 the stream must exist, n >= 0
-- exact) and event count; per event, in append order, the index of its append (1-based) and
-- its columns. Exactly one of p_json and p_bytes is not null. Returns one row per append, in
-- the order given: stored (ok), the stream's version after it (or, when not stored, the
-- stream's actual version), and its first and last positions (0 when not stored).
CREATE FUNCTION append_group(
    p_streams text[],
    p_expected bigint[],
    p_counts int[],
    p_app int[],
    p_ids uuid[],
    p_types text[],
    p_json text[],
    p_bytes bytea[],
    p_metadata bytea[],
    p_created timestamptz[],
    p_channel text
) RETURNS TABLE (ok boolean, stream_version bigint, first_position bigint, last_position bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_apps int := cardinality(p_streams);
    v_ok boolean[] := array_fill(false, ARRAY[v_apps]);
    -- Stored: the version of the append's first event. Not stored: the stream's actual version.
    v_version bigint[] := array_fill(0::bigint, ARRAY[v_apps]);
    v_first_event int[] := array_fill(0, ARRAY[v_apps]);
    v_first_position bigint[] := array_fill(0::bigint, ARRAY[v_apps]);
    v_stream text;
    v_members int[];
    v_current bigint;
    v_start bigint;
    v_found boolean;
    v_expected bigint;
    v_sum bigint;
    v_total bigint := 0;
    v_next bigint;
    v_last bigint;
    i int;
BEGIN
    v_next := 1;
    FOR i IN 1..v_apps LOOP
        v_first_event[i] := v_next;
        v_next := v_next + p_counts[i];
    END LOOP;
    -- Streams are locked in one order (byte order of their ids) by every group, so two groups
    -- never wait for each other in a cycle; append_events locks one stream only.
    FOR v_stream, v_members, v_sum IN
        SELECT t.s, array_agg(t.i ORDER BY t.i), sum(p_counts[t.i])
        FROM unnest(p_streams) WITH ORDINALITY AS t (s, i)
        GROUP BY t.s ORDER BY t.s COLLATE "C"
    LOOP
        LOOP
            -- Lock the stream and bump it as if every one of its appends will be stored (the
            -- usual case: one statement, as in append_events); set right below if not.
            UPDATE streams SET version = version + v_sum WHERE stream_id = v_stream
                RETURNING version - v_sum INTO v_current;
            v_found := FOUND;
            IF NOT v_found THEN
                v_current := 0;
            END IF;
            v_start := v_current;
            -- The stream's appends in the order given: each is checked against the version the
            -- ones before it left.
            FOREACH i IN ARRAY v_members LOOP
                v_expected := p_expected[i];
                IF (v_expected = -2 AND v_current = 0) OR (v_expected >= 0 AND v_current <> v_expected) THEN
                    v_ok[i] := false;
                    v_version[i] := v_current;
                ELSE
                    v_ok[i] := true;
                    v_version[i] := v_current + 1;
                    v_current := v_current + p_counts[i];
                END IF;
            END LOOP;
            IF v_found THEN
                IF v_current <> v_start + v_sum THEN
                    UPDATE streams SET version = v_current WHERE stream_id = v_stream;
                END IF;
                EXIT;
            END IF;
            EXIT WHEN v_current = 0;
            INSERT INTO streams (stream_id, version) VALUES (v_stream, v_current) ON CONFLICT (stream_id) DO NOTHING;
            EXIT WHEN FOUND;
            -- Another transaction created the stream meanwhile: decide again under its lock.
        END LOOP;
        v_total := v_total + (v_current - v_start);
    END LOOP;
    IF v_total > 0 THEN
        -- The global position lock, taken last and held until commit (decision 0201).
        UPDATE log_head SET position = position + v_total WHERE id RETURNING position INTO v_last;
        v_next := v_last - v_total + 1;
        FOR i IN 1..v_apps LOOP
            IF v_ok[i] THEN
                v_first_position[i] := v_next;
                v_next := v_next + p_counts[i];
            END IF;
        END LOOP;
        IF p_json IS NOT NULL THEN
            INSERT INTO events (position, stream_id, version, event_id, event_type, payload, metadata, created_at)
            SELECT a.pos + (e.n - a.fe), a.s, a.ver + (e.n - a.fe), e.id, e.ty, e.body::jsonb, e.meta, e.ts
            FROM unnest(p_app, p_ids, p_types, p_json, p_metadata, p_created) WITH ORDINALITY AS e (app, id, ty, body, meta, ts, n)
            JOIN unnest(p_streams, v_ok, v_version, v_first_event, v_first_position) WITH ORDINALITY AS a (s, ok, ver, fe, pos, k)
                ON a.k = e.app
            WHERE a.ok
            ORDER BY e.n;
        ELSE
            INSERT INTO events (position, stream_id, version, event_id, event_type, payload_bytes, metadata, created_at)
            SELECT a.pos + (e.n - a.fe), a.s, a.ver + (e.n - a.fe), e.id, e.ty, e.body, e.meta, e.ts
            FROM unnest(p_app, p_ids, p_types, p_bytes, p_metadata, p_created) WITH ORDINALITY AS e (app, id, ty, body, meta, ts, n)
            JOIN unnest(p_streams, v_ok, v_version, v_first_event, v_first_position) WITH ORDINALITY AS a (s, ok, ver, fe, pos, k)
                ON a.k = e.app
            WHERE a.ok
            ORDER BY e.n;
        END IF;
        IF p_channel IS NOT NULL THEN
            PERFORM pg_notify(p_channel, v_last::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT a.ok,
           CASE WHEN a.ok THEN a.ver + a.c - 1 ELSE a.ver END,
           CASE WHEN a.ok THEN a.pos ELSE 0 END,
           CASE WHEN a.ok THEN a.pos + a.c - 1 ELSE 0 END
    FROM unnest(v_ok, v_version, v_first_position, p_counts) WITH ORDINALITY AS a (ok, ver, pos, c, k)
    ORDER BY a.k;
END
$$;
