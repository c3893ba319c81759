"""Every SQL statement of the PostgreSQL store, as constants: values only ever travel as parameters.

`NOW_SQL` is the database server's clock in epoch seconds; the whole fleet shares it.
"""

from __future__ import annotations

NOW_SQL = "extract(epoch from clock_timestamp())::float8"

# --- runs ---------------------------------------------------------------------------------

INSERT_RUN = f"INSERT INTO runs (started, options) VALUES ({NOW_SQL}, %s) RETURNING id"
# Two workers starting a joinable run at once: the second waits, then finds the first's run.
LOCK_RUNS = "SELECT pg_advisory_xact_lock(hashtext('patent-images runs ' || current_schema()))"
# Live: a worker's lease is current, or it started a moment ago and no worker has said anything yet
# (its starter's first heartbeat may not be in: workers started together must not make two runs).
FIND_LIVE_RUN = f"""SELECT r.id FROM runs r WHERE r.ended IS NULL AND r.options -> 'inputs' = %s
    AND (EXISTS (SELECT 1 FROM workers w WHERE w.run_id = r.id AND NOT w.finished AND w.lease_until >= {NOW_SQL})
         OR (r.started >= {NOW_SQL} - 60 AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.run_id = r.id)))
    ORDER BY r.id DESC LIMIT 1"""
FINISH_RUN = f"UPDATE runs SET ended = {NOW_SQL}, exit_code = %s, summary = %s WHERE id = %s"
RUNS = "SELECT id, started, ended, exit_code, options, summary FROM runs ORDER BY id DESC LIMIT %s"

# --- inputs -------------------------------------------------------------------------------

# One chunk of keys: de-duplicated within the chunk (ON CONFLICT may touch a row once per
# statement), inserted in input order so `seq` keeps it. A key already in this run is not
# rewritten: the second worker reading the same CSV writes nothing.
UPSERT_KEYS = f"""INSERT INTO patents (kind, key, seen_run, first_run, updated_at)
    SELECT kind, key, %(run)s, %(run)s, {NOW_SQL} FROM (
        SELECT kind, key, min(ord) AS ord FROM unnest(%(kinds)s::text[], %(keys)s::text[])
            WITH ORDINALITY AS t(kind, key, ord) GROUP BY kind, key) k
    ORDER BY ord
    ON CONFLICT (kind, key) DO UPDATE SET seen_run = excluded.seen_run
        WHERE patents.seen_run IS DISTINCT FROM excluded.seen_run"""
# Fresh statistics after a big ingest, so claims walk `patents_unsettled` in seq order at once
# instead of sorting the whole run (what the planner picks while it believes the table is empty).
ANALYZE = "ANALYZE patents"
INGESTED = "SELECT count(*), count(*) FILTER (WHERE first_run = %s) FROM patents WHERE seen_run = %s"
REOPEN_FAILED = ("UPDATE patents SET status = 'pending', attempts = 0, expiries = 0 "
                 "WHERE seen_run = %s AND status = 'failed'")
REOPEN_MISSES = ("UPDATE patents SET status = 'pending' WHERE seen_run = %s "
                 "AND status IN ('no_image', 'not_found') AND updated_at < %s")
CLEAR_RETRY_AT = ("UPDATE patents SET retry_at = NULL WHERE seen_run = %s AND status IN ('pending', 'resolved') "
                  "AND retry_at IS NOT NULL")

PLAN_TABLE = "CREATE TEMP TABLE plan_keys (kind text NOT NULL, key text NOT NULL) ON COMMIT DROP"
PLAN_COPY = "COPY plan_keys (kind, key) FROM STDIN"
# Whether the run would ask the API for this key; never NULL (`NOT _ASK` must hold for the rest).
_ASK = """coalesce(p.status IS NULL OR p.status = 'pending' OR (p.status = 'resolved' AND p.expires_at <= %(usable)s)
    OR (%(retry_failed)s AND p.status = 'failed')
    OR (p.status IN ('no_image', 'not_found') AND p.updated_at < %(recheck)s::float8), false)"""
PLAN = f"""WITH k AS (SELECT kind, key, count(*) AS n FROM plan_keys GROUP BY kind, key)
    SELECT coalesce(sum(k.n), 0), count(*), count(*) FILTER (WHERE p.status IS NULL),
        count(*) FILTER (WHERE p.status IN ('downloaded', 'no_image', 'not_found') AND NOT {_ASK}),
        count(*) FILTER (WHERE p.status = 'failed' AND NOT {_ASK}),
        count(*) FILTER (WHERE p.status = 'resolved' AND p.expires_at > %(usable)s),
        count(*) FILTER (WHERE {_ASK} AND k.kind = 'patent_number'),
        count(*) FILTER (WHERE {_ASK} AND k.kind = 'patent_id')
    FROM k LEFT JOIN patents p ON p.kind = k.kind AND p.key = k.key"""

# --- claims -------------------------------------------------------------------------------

NOW = f"SELECT {NOW_SQL}"
_FREE = "(claimed_by IS NULL OR lease_until < %(now)s)"
_UNSETTLED = "seen_run = %(run)s AND status IN ('pending', 'resolved')"
# A Deferred event sets `retry_at` without changing the status: such a key is claimed by nobody before then.
_DUE = "(retry_at IS NULL OR retry_at <= %(now)s)"
# (A patent of --drawings all that is resolved has drawings waiting for downloads, not for the API.)
_NEEDS_API = f"""((status = 'pending' OR (status = 'resolved' AND figures IS NULL
    AND (expires_at IS NULL OR expires_at <= %(usable)s))) AND {_DUE})"""
_TAKE = """UPDATE patents p SET claimed_by = %(worker)s, lease_until = %(lease_until)s, lease_gen = %(gen)s
    FROM c WHERE p.kind = c.kind AND p.key = c.key"""
NEXT_GENERATION = "SELECT nextval('lease_generations')"
# A claim retried after its connection broke: the first try may have committed before its answer was lost.
RELEASE_TRIED = "UPDATE {} SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %s AND lease_gen = ANY(%s)"

CLAIM_DOWNLOADS = f"""WITH c AS (SELECT kind, key FROM patents WHERE {_UNSETTLED} AND status = 'resolved'
        AND expires_at > %(usable)s AND {_DUE} AND {_FREE} ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    {_TAKE} RETURNING p.seq, p.kind, p.key, p.pn, p.num, p.url, p.expires_at"""
# Listed drawings (--drawings all) of this run nobody holds (their asker died or stopped): downloaded, no call.
CLAIM_DRAWINGS = """WITH c AS (SELECT d.kind, d.key, d.figure FROM drawings d JOIN patents p ON p.kind = d.kind
        AND p.key = d.key WHERE d.status = 'resolved' AND p.seen_run = %(run)s
        AND (d.claimed_by IS NULL OR d.lease_until < %(now)s) AND (d.retry_at IS NULL OR d.retry_at <= %(now)s)
        LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED)
    UPDATE drawings d SET claimed_by = %(worker)s, lease_until = %(lease_until)s, lease_gen = %(gen)s FROM c
    WHERE d.kind = c.kind AND d.key = c.key AND d.figure = c.figure
    RETURNING d.kind, d.key, d.figure, d.image, d.pn, d.num, d.url, d.expires_at"""
WAITING_DRAWINGS = """SELECT count(*) FILTER (WHERE claimed_by IS NOT NULL AND lease_until >= %(now)s),
        count(*) FILTER (WHERE retry_at > %(now)s), min(retry_at) FILTER (WHERE retry_at > %(now)s)
    FROM drawings WHERE status = 'resolved'"""
# The first free key that needs the API sets the batch's kind; locking it (SKIP LOCKED) means the
# batch has at least that key, even when other workers are claiming the first keys of that kind.
FIRST_TO_ASK = f"""SELECT kind FROM patents WHERE {_UNSETTLED} AND {_NEEDS_API} AND {_FREE}
    ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"""
CLAIM_TO_ASK = f"""WITH c AS (SELECT kind, key FROM patents WHERE {_UNSETTLED} AND kind = %(kind)s AND {_NEEDS_API}
        AND {_FREE} ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    {_TAKE} RETURNING p.seq, p.key, (p.expiries > 0 OR p.status = 'resolved'
        OR (p.status = 'pending' AND p.attempts > 0)
        OR EXISTS (SELECT 1 FROM drawings d WHERE d.kind = p.kind AND d.key = p.key AND d.status = 'pending'))"""
# (the last column: paid for before and unused: the URL, or a drawing's, expired, or the answer was lost on
# the way (a Deferred that says so counts an attempt; pending with attempts is one): asking again is a recharge)
# The drawings of the keys asked that are already downloaded: asked again, they keep their row and file.
STORED_DRAWINGS = """SELECT key, figure, image FROM drawings WHERE kind = %(kind)s AND key = ANY(%(keys)s)
    AND status = 'downloaded'"""
# When nothing could be claimed, every unsettled key of the run is deferred to a later retry, held
# under a live lease, or being claimed in another worker's open transaction (which no query can see
# yet): all but the deferred ones count as waiting. So does a key freed a moment ago ("try again").
_DEFERRED = "coalesce(retry_at > %(now)s AND NOT coalesce(lease_until >= %(now)s, false), false)"
WAITING = f"""SELECT count(*) FILTER (WHERE NOT deferred), count(*) FILTER (WHERE deferred),
        min(retry_at) FILTER (WHERE deferred)
    FROM (SELECT retry_at, ({_DEFERRED}) AS deferred FROM patents WHERE {_UNSETTLED}) u"""
# Claims live on patents and on drawings: each of these runs on both tables ({} is the table).
# Renewed: only claims whose lease has not run out, since keys of a lapsed one may have been taken
# (then the whole generation is lost to this worker; its other keys come back when their lease lapses).
RENEW = f"""WITH r AS (UPDATE {{}} SET lease_until = {NOW_SQL} + %(lease)s WHERE claimed_by = %(worker)s
        AND lease_gen = ANY(%(gens)s) AND lease_until >= {NOW_SQL} RETURNING lease_gen)
    SELECT DISTINCT lease_gen FROM r"""
RELEASE = "UPDATE {} SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %s"
RELEASE_ALL = "UPDATE {} SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL"
TABLES_WITH_CLAIMS = ("patents", "drawings")

# --- results (the per-event UPDATEs are `transitions.update_for`, shared with SQLite) ----------

# The current generation of the rows some held writes were meant for (patents: image '').
GENERATIONS = """SELECT 'patents', p.kind, p.key, '', p.lease_gen FROM patents p
        JOIN unnest(%(kinds)s::text[], %(keys)s::text[]) AS w(kind, key) ON p.kind = w.kind AND p.key = w.key
    UNION ALL SELECT 'drawings', d.kind, d.key, d.image, d.lease_gen FROM drawings d
        JOIN unnest(%(dkinds)s::text[], %(dkeys)s::text[], %(images)s::text[]) AS w(kind, key, image)
        ON d.kind = w.kind AND d.key = w.key AND d.image = w.image"""

# --- reading ------------------------------------------------------------------------------

COUNTS_ALL = "SELECT status, count(*) FROM patents GROUP BY status"
COUNTS_RUN = "SELECT status, count(*) FROM patents WHERE seen_run = %s GROUP BY status"
_ROW = "kind, key, status, pn, patent_id, num, url, expires_at, local_file, bytes, sha256, error, updated_at"
_FILTERS = {(False, False): "", (True, False): "WHERE seen_run = %(run)s", (False, True): "WHERE status = %(status)s",
            (True, True): "WHERE seen_run = %(run)s AND status = %(status)s"}
# Keyed by (a run is given, a status is given): one plain query each, so each gets its own plan.
ROWS = {has: f"SELECT {_ROW} FROM patents {where} ORDER BY seq" for has, where in _FILTERS.items()}
_DRAWING_ROW = """p.kind, p.key, coalesce(d.status, p.status), p.pn, p.patent_id, d.num, d.url, d.expires_at,
    d.local_file, d.bytes, d.sha256, coalesce(d.error, p.error), coalesce(d.updated_at, p.updated_at), d.figure,
    d.image_type"""
_P_FILTERS = {has: where.replace("seen_run", "p.seen_run").replace("status =", "p.status =")
              for has, where in _FILTERS.items()}
# --drawings all: each patent's drawings in figure order; one row with no figure for a patent without any.
DRAWING_ROWS = {has: f"""SELECT {_DRAWING_ROW} FROM patents p LEFT JOIN drawings d ON d.kind = p.kind AND d.key = p.key
    {where} ORDER BY p.seq, d.figure""" for has, where in _P_FILTERS.items()}
DRAWINGS_KIND = "SELECT value FROM meta WHERE key = 'drawings'"
ANY_PATENT = "SELECT 1 FROM patents LIMIT 1"
SET_DRAWINGS_KIND = "INSERT INTO meta VALUES ('drawings', %s) ON CONFLICT (key) DO NOTHING"
DRAWING_COUNTS = """SELECT d.status, count(*) FROM drawings d JOIN patents p ON p.kind = d.kind AND p.key = d.key
    WHERE %(run)s::bigint IS NULL OR p.seen_run = %(run)s GROUP BY d.status"""
FIGURE_COUNTS = """SELECT coalesce(figures, 0), count(*) FROM patents WHERE (figures IS NOT NULL OR status = 'no_image')
    AND (%(run)s::bigint IS NULL OR seen_run = %(run)s) GROUP BY 1"""
LATEST = f"SELECT {_ROW} FROM patents WHERE status = %s ORDER BY updated_at DESC, seq DESC LIMIT %s"

# --- workers and shared records -----------------------------------------------------------

HEARTBEAT = f"""INSERT INTO workers (worker, run_id, started, lease_until, info, finished)
    VALUES (%(worker)s, %(run)s, {NOW_SQL}, {NOW_SQL} + %(lease)s, %(info)s, %(finished)s)
    ON CONFLICT (worker) DO UPDATE SET run_id = excluded.run_id, lease_until = excluded.lease_until,
        info = excluded.info, finished = excluded.finished,
        started = CASE WHEN workers.run_id = excluded.run_id THEN workers.started ELSE excluded.started END"""
_WORKERS = f"""WITH now AS (SELECT {NOW_SQL} AS t)
    SELECT w.worker, w.run_id, w.lease_until, w.info,
        (SELECT count(*) FROM patents p WHERE p.claimed_by = w.worker AND p.lease_until >= now.t),
        w.finished
    FROM workers w, now WHERE {{}}
    ORDER BY (NOT w.finished AND w.lease_until >= now.t) DESC, w.run_id DESC, w.worker"""
WORKERS_RUN = _WORKERS.format("w.run_id = %s")
WORKERS_RECENT = _WORKERS.format("w.run_id IN (SELECT id FROM runs ORDER BY id DESC LIMIT 20)")

SHARED_ENSURE = "INSERT INTO shared (name, value) VALUES (%s, NULL) ON CONFLICT (name) DO NOTHING"
SHARED_LOCK = f"SELECT value, {NOW_SQL} FROM shared WHERE name = %s FOR UPDATE"
SHARED_SET = "UPDATE shared SET value = %s WHERE name = %s"
SHARED_READ = "SELECT value FROM shared WHERE name = %s"
