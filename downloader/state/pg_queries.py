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
_NEEDS_API = f"""((status = 'pending' OR (status = 'resolved' AND (expires_at IS NULL OR expires_at <= %(usable)s)))
    AND {_DUE})"""
_TAKE = """UPDATE patents p SET claimed_by = %(worker)s, lease_until = %(lease_until)s, lease_gen = %(gen)s
    FROM c WHERE p.kind = c.kind AND p.key = c.key"""
NEXT_GENERATION = "SELECT nextval('lease_generations')"
# A claim retried after its connection broke: the first try may have committed before its answer was lost.
RELEASE_TRIED = "UPDATE patents SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %s AND lease_gen = ANY(%s)"

CLAIM_DOWNLOADS = f"""WITH c AS (SELECT kind, key FROM patents WHERE {_UNSETTLED} AND status = 'resolved'
        AND expires_at > %(usable)s AND {_DUE} AND {_FREE} ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    {_TAKE} RETURNING p.seq, p.kind, p.key, p.pn, p.num, p.url, p.expires_at"""
# The first free key that needs the API sets the batch's kind; locking it (SKIP LOCKED) means the
# batch has at least that key, even when other workers are claiming the first keys of that kind.
FIRST_TO_ASK = f"""SELECT kind FROM patents WHERE {_UNSETTLED} AND {_NEEDS_API} AND {_FREE}
    ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"""
CLAIM_TO_ASK = f"""WITH c AS (SELECT kind, key FROM patents WHERE {_UNSETTLED} AND kind = %(kind)s AND {_NEEDS_API}
        AND {_FREE} ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    {_TAKE} RETURNING p.seq, p.key, (p.expiries > 0 OR p.status = 'resolved')"""
# (the last column: paid for before, and the URL expired unused: asking again is a recharge)
# When nothing could be claimed, every unsettled key of the run is deferred to a later retry, held
# under a live lease, or being claimed in another worker's open transaction (which no query can see
# yet): all but the deferred ones count as waiting. So does a key freed a moment ago ("try again").
_DEFERRED = "coalesce(retry_at > %(now)s AND NOT coalesce(lease_until >= %(now)s, false), false)"
WAITING = f"""SELECT count(*) FILTER (WHERE NOT deferred), count(*) FILTER (WHERE deferred),
        min(retry_at) FILTER (WHERE deferred)
    FROM (SELECT retry_at, ({_DEFERRED}) AS deferred FROM patents WHERE {_UNSETTLED}) u"""
# Only claims whose lease has not run out: keys of a lapsed one may have been taken (then the whole
# generation is lost to this worker; its other keys come back to the pool when their lease lapses).
RENEW = f"""WITH r AS (UPDATE patents SET lease_until = {NOW_SQL} + %(lease)s WHERE claimed_by = %(worker)s
        AND lease_gen = ANY(%(gens)s) AND lease_until >= {NOW_SQL} RETURNING lease_gen)
    SELECT DISTINCT lease_gen FROM r"""
RELEASE = "UPDATE patents SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = %s"
RELEASE_ALL = "UPDATE patents SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL"

# --- results (the per-event UPDATEs are `transitions.update_for`, shared with SQLite) ----------

GENERATIONS = """SELECT p.kind, p.key, p.lease_gen FROM patents p
    JOIN unnest(%s::text[], %s::text[]) AS w(kind, key) ON p.kind = w.kind AND p.key = w.key"""

_SETTLE = "claimed_by = NULL, lease_until = NULL, retry_at = NULL"
FAIL_EXPIRED = f"""UPDATE patents SET status = 'failed', {_SETTLE}, updated_at = {NOW_SQL},
    error = 'UrlExpiredError: the URL expired before the download ' || expiries || ' times'
    WHERE seen_run = %s AND status = 'pending' AND expiries >= %s"""

# --- reading ------------------------------------------------------------------------------

COUNTS_ALL = "SELECT status, count(*) FROM patents GROUP BY status"
COUNTS_RUN = "SELECT status, count(*) FROM patents WHERE seen_run = %s GROUP BY status"
_ROW = "kind, key, status, pn, patent_id, num, url, expires_at, local_file, bytes, sha256, error, updated_at"
_FILTERS = {(False, False): "", (True, False): "WHERE seen_run = %(run)s", (False, True): "WHERE status = %(status)s",
            (True, True): "WHERE seen_run = %(run)s AND status = %(status)s"}
# Keyed by (a run is given, a status is given): one plain query each, so each gets its own plan.
ROWS = {has: f"SELECT {_ROW} FROM patents {where} ORDER BY seq" for has, where in _FILTERS.items()}
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
