import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from '../config';
import { withTransaction } from '../db';
import { qualified } from '../windows';

/**
 * A hypertable's chunks for V1 telemetry's time range, created before its windows copy.
 *
 * A chunk is created by the first row that falls in it, and creating one takes locks (on the
 * hypertable, and on `devices` and `tenants` to add the chunk's foreign keys) that its
 * transaction holds until it commits. A window whose COPY creates a chunk therefore holds up
 * every other window that needs a new chunk until the whole window has committed: with windows
 * about as wide in time as a chunk, the backfill's workers took turns instead of copying side by
 * side (measured at 1M rows: a worker's COPY waited on a relation lock in about 40 % of the
 * samples). Created here, in one short transaction before the first window, no window creates one.
 *
 * Each chunk is made the way a row makes it: one row per chunk interval is inserted, which
 * creates the chunk as TimescaleDB would, and deleted again in the same transaction, so no such
 * row is ever visible. The rows skip the foreign-key triggers (`session_replication_role =
 * replica`, the right the backfill's COPY uses too): V2 holds no device yet when this runs. Where
 * that right is missing, the dual writes hold telemetry for more than a few seconds, or the span
 * covers more than MAX_CHUNKS chunk intervals, nothing is created and the windows create their
 * chunks as they copy.
 */

/** At most this many chunk intervals between V1's first and last telemetry row. */
const MAX_CHUNKS = 1000;
/** Waits this long at most for the dual writes' locks, then gives up (chunks made by the windows). */
const LOCK_TIMEOUT = '5s';

export interface TelemetrySpan {
  /** V1 telemetry timestamps (V1 `timestamp`, read as UTC), as PostgreSQL prints them. */
  first: string;
  last: string;
}

/**
 * Creates V2 telemetry's missing chunks from `span.first` to `span.last` (see above: the planner
 * passes its first and last window boundaries); returns the names of the chunks it created, []
 * where it created none.
 */
export async function precreateChunks(
  v2: Pool,
  config: MigrationConfig,
  span: TelemetrySpan,
): Promise<string[]> {
  const table = qualified(config.schemas.v2, 'telemetry');
  const chunks = async (client: Pool | PoolClient) =>
    new Set(
      (
        await client.query<{ name: string }>(
          `SELECT format('%I.%I', chunk_schema, chunk_name) AS name FROM timescaledb_information.chunks
            WHERE hypertable_schema = $1 AND hypertable_name = 'telemetry'`,
          [config.schemas.v2],
        )
      ).rows.map((r) => r.name),
    );
  const before = await chunks(v2);
  try {
    return await withTransaction(
      v2,
      async (client) => {
        await client.query(`SELECT set_config('lock_timeout', $1, true)`, [LOCK_TIMEOUT]);
        await client.query(`SELECT set_config('session_replication_role', 'replica', true)`);
        // One instant per chunk interval from the first row's to the last row's, and the last.
        const probes = await client.query<{ ts: string }>(
          `WITH d AS (
             SELECT time_interval AS step FROM timescaledb_information.dimensions
              WHERE hypertable_schema = $1 AND hypertable_name = 'telemetry' AND column_name = 'timestamp'),
           s AS (SELECT $2::timestamp AT TIME ZONE 'UTC' AS first, $3::timestamp AT TIME ZONE 'UTC' AS last)
           SELECT g::text AS ts FROM d, s, generate_series(s.first, s.last, d.step) AS g
            WHERE d.step > interval '0' AND extract(epoch FROM s.last - s.first) / extract(epoch FROM d.step) <= $4
           UNION SELECT s.last::text FROM s`,
          [config.schemas.v2, span.first, span.last, MAX_CHUNKS],
        );
        // Only the last instant: the rows span more than MAX_CHUNKS intervals.
        if (probes.rows.length < 2 && span.first !== span.last) return [];
        const inserted = await client.query<{ id: string; ts: string }>(
          `INSERT INTO ${table} (tenant_id, device_id, "timestamp", metrics, protocol, source)
           SELECT $1, '', t, '{}', '', '' FROM unnest($2::timestamptz[]) AS t
           RETURNING id::text, "timestamp"::text AS ts`,
          [config.tenant.id, probes.rows.map((r) => r.ts)],
        );
        await client.query(
          `DELETE FROM ${table} t USING unnest($1::bigint[], $2::timestamptz[]) AS p(id, ts)
            WHERE t.id = p.id AND t."timestamp" = p.ts`,
          [inserted.rows.map((r) => r.id), inserted.rows.map((r) => r.ts)],
        );
        return [...(await chunks(client))].filter((c) => !before.has(c)).sort();
      },
      // One try: a refusal or a lock timeout leaves the chunks to the windows.
      { attempts: 1 },
    );
  } catch (error) {
    const code = (error as { code?: string }).code;
    // 42501: the role may not skip the triggers; 55P03: the dual writes held a lock too long.
    if (code === '42501' || code === '55P03') return [];
    throw error;
  }
}
