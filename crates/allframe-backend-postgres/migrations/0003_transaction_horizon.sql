-- AllFrame CQRS event store, version 3: appends that do not wait for each other
-- (docs/decisions/0203-postgres-transaction-horizon.md).
--
-- Until version 2 every append took the row lock of log_head and kept it through its commit, so
-- that commit order was position order; appends of every process queued on that lock, one WAL
-- flush at a time. From version 3 positions come from the appending transaction's id:
--
--     position = ((transaction id + xid_offset) << 16) + n,   n = 1, 2, ... within the transaction
--
-- and readers read only below the horizon
--
--     ((pg_snapshot_xmin(pg_current_snapshot()) + xid_offset) << 16)
--
-- taken in the same statement (one snapshot) as the rows. Every transaction with an id below
-- the snapshot's xmin has finished and every later one gets a higher id, so no event can ever
-- appear below the horizon a reader has passed: commit order no longer matters, and writers in
-- any number of processes commit side by side. Positions increase in the order readers are
-- given events (transaction id, then n); they are not contiguous.
--
-- One rule makes positions follow versions within a stream: a transaction gets its id at its
-- first write, and it writes only once it holds every stream it appends to. Streams are locked
-- with transaction-level advisory locks (which need no transaction id), in one order, before
-- anything is written; so an append to a stream gets an id above the id of the append before
-- it, which had finished when the lock was handed over.
--
-- Costs (docs/POSTGRES.md): a long-running transaction that holds a transaction id, anywhere in
-- the cluster, holds readers back (they lag, they never skip); a transaction id does not
-- survive a dump and restore into another cluster, which xid_offset corrects (check_epoch).
-- Every process of an application must run this version: a reader of version 2 reads by
-- position alone and could skip.

-- The offset added to transaction ids. Set here so that new positions go above the positions
-- 1..N the counter gave so far, and raised by check_epoch after a restore into a cluster whose
-- transaction ids are lower.
CREATE TABLE log_epoch (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    xid_offset bigint NOT NULL CHECK (xid_offset >= 0)
);
INSERT INTO log_epoch (id, xid_offset)
SELECT true, greatest(0, (coalesce(max(position), 0) >> 16) + 1 - pg_snapshot_xmin(pg_current_snapshot())::text::bigint)
FROM events;

-- Makes sure that every transaction id this cluster will assign gives positions above every
-- stored one, raising xid_offset when not (the store was restored into a cluster with lower
-- transaction ids). Run by the backend on every new connection before it is used. The
-- exclusive lock waits for appends in flight (they read log_epoch) and holds new ones back
-- while the offset moves. Returns by how much the offset moved.
CREATE FUNCTION check_epoch() RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_stored bigint;
    v_offset bigint;
    v_next bigint;
BEGIN
    SELECT coalesce(max(position), 0) INTO v_stored FROM events;
    SELECT xid_offset INTO v_offset FROM log_epoch;
    -- Every committed transaction has an id below xmax, and every later one at least xmax.
    v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    IF ((v_next + v_offset) << 16) > v_stored THEN
        RETURN 0;
    END IF;
    LOCK TABLE log_epoch IN ACCESS EXCLUSIVE MODE;
    SELECT coalesce(max(position), 0) INTO v_stored FROM events;
    SELECT xid_offset INTO v_offset FROM log_epoch;
    v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    IF ((v_next + v_offset) << 16) > v_stored THEN
        RETURN 0;
    END IF;
    UPDATE log_epoch SET xid_offset = (v_stored >> 16) + 1 - v_next;
    RETURN (v_stored >> 16) + 1 - v_next - v_offset;
END
$$;

-- The transactions older than p_xid still running. A snapshot lists the ones running when it
-- was taken, but PostgreSQL reuses a snapshot taken before p_xid was assigned while no
-- transaction ends: so the candidates are the snapshot's list plus every id between its xmax
-- and p_xid, each checked with its current status. Null when that range is too long to look at
-- (over 1,000 ids).
CREATE FUNCTION older_running(p_xid bigint) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    v_snapshot pg_snapshot := pg_current_snapshot();
    v_xmax bigint := pg_snapshot_xmax(v_snapshot)::text::bigint;
BEGIN
    IF p_xid - v_xmax > 1000 THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(
        SELECT x FROM (
            SELECT x::text::bigint AS x FROM pg_snapshot_xip(v_snapshot) AS x
            UNION
            SELECT x FROM generate_series(v_xmax, p_xid - 1) AS x
        ) AS candidates
        WHERE x < p_xid AND pg_xact_status(x::text::xid8) = 'in progress'
    );
END
$$;

-- One append, as in version 1 (same arguments), with positions from the transaction id. Extra
-- columns, for acknowledging the append once it is visible to every reader: visible_below, the
-- horizon its events are below once it has committed if nothing older is still running then
-- (otherwise the horizon seen at its end); txid, its transaction id; older_running, the ids of the older
-- transactions still running at its end, which it waits for (null: not known).
DROP FUNCTION append_events(text, bigint, uuid[], text[], text[], bytea[], bytea[], timestamptz[], text);
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
) RETURNS TABLE (stream_version bigint, first_position bigint, last_position bigint, visible_below bigint,
                txid bigint, older_running bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count bigint := cardinality(p_ids);
    v_current bigint;
    v_offset bigint;
    v_xid bigint;
    v_older bigint[];
    v_base bigint;
BEGIN
    IF v_count >= 65536 THEN
        RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'allframe: more than 65535 events in one transaction';
    END IF;
    -- The stream's lock, before the first write (which gives this transaction its id).
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_stream));
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
    SELECT xid_offset INTO v_offset FROM log_epoch;
    v_xid := pg_current_xact_id()::text::bigint;
    v_base := (v_xid + v_offset) << 16;
    IF p_json IS NOT NULL THEN
        INSERT INTO events (position, stream_id, version, event_id, event_type, payload, metadata, created_at)
        SELECT v_base + t.n, p_stream, v_current + t.n, t.id, t.ty, t.body::jsonb, t.meta, t.ts
        FROM unnest(p_ids, p_types, p_json, p_metadata, p_created) WITH ORDINALITY AS t (id, ty, body, meta, ts, n);
    ELSE
        INSERT INTO events (position, stream_id, version, event_id, event_type, payload_bytes, metadata, created_at)
        SELECT v_base + t.n, p_stream, v_current + t.n, t.id, t.ty, t.body, t.meta, t.ts
        FROM unnest(p_ids, p_types, p_bytes, p_metadata, p_created) WITH ORDINALITY AS t (id, ty, body, meta, ts, n);
    END IF;
    IF p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, (v_base + v_count)::text);
    END IF;
    -- A statement of its own: a fresh snapshot, taken after this append's work.
    v_older := older_running(v_xid);
    RETURN QUERY SELECT v_current + v_count, v_base + 1, v_base + v_count,
        CASE WHEN v_older = '{}' THEN (v_xid + 1 + v_offset) << 16
             ELSE ((SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) + v_offset) << 16 END,
        v_xid, v_older;
END
$$;

-- append_group does the appends of several callers in one statement and one transaction (group
-- commit: one round trip, one commit, one WAL flush for all of them). Each append is checked on
-- its own: one whose expected version does not match is reported in its row of the result and
-- writes nothing, while the others of the group are stored.
--
-- Arguments: per append, its stream, expected version (-1 any, -2 the stream must exist, n >= 0
-- exact) and event count; per event, in append order, the index of its append (1-based) and
-- its columns. Exactly one of p_json and p_bytes is not null. Returns one row per append, in
-- the order given: stored (ok), the stream's version after it (or, when not stored, the
-- stream's actual version), its first and last positions (0 when not stored), and
-- visible_below, txid and older_running as append_events gives them.
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
) RETURNS TABLE (ok boolean, stream_version bigint, first_position bigint, last_position bigint, visible_below bigint,
               txid bigint, older_running bigint[])
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
    v_offset bigint;
    v_xid bigint;
    v_xmin bigint;
    v_older bigint[] := '{}';
    v_visible bigint := 0;
    i int;
BEGIN
    v_next := 1;
    FOR i IN 1..v_apps LOOP
        v_first_event[i] := v_next;
        v_next := v_next + p_counts[i];
    END LOOP;
    -- Every stream of the group is locked before the first write, which gives this transaction
    -- its id; locks are taken in one order (of their keys) by every group, so two groups never
    -- wait for each other in a cycle (append_events takes one).
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), t.k)
    FROM (SELECT DISTINCT hashtext(s) AS k FROM unnest(p_streams) AS s ORDER BY 1) AS t;
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
        IF v_total >= 65536 THEN
            RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'allframe: more than 65535 events in one transaction';
        END IF;
        SELECT xid_offset INTO v_offset FROM log_epoch;
        v_xid := pg_current_xact_id()::text::bigint;
        v_last := ((v_xid + v_offset) << 16) + v_total;
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
    IF v_total > 0 THEN
        -- A statement of its own: a fresh snapshot, taken after this group's work.
        v_older := older_running(v_xid);
        v_visible := CASE WHEN v_older = '{}' THEN (v_xid + 1 + v_offset) << 16
                          ELSE ((SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) + v_offset) << 16 END;
    END IF;
    RETURN QUERY
    SELECT a.ok,
           CASE WHEN a.ok THEN a.ver + a.c - 1 ELSE a.ver END,
           CASE WHEN a.ok THEN a.pos ELSE 0 END,
           CASE WHEN a.ok THEN a.pos + a.c - 1 ELSE 0 END,
           v_visible, coalesce(v_xid, 0), v_older
    FROM unnest(v_ok, v_version, v_first_position, p_counts) WITH ORDINALITY AS a (ok, ver, pos, c, k)
    ORDER BY a.k;
END
$$;
