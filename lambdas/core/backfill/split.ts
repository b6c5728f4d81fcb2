import type { Pool } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema } from '../db';
import { MAPPINGS } from '../mapping';
import { bindWindow, loadWindow, qualified, type Bound } from '../windows';
import { deviceSlices } from '../sync/window-copy';

/**
 * Shrinks a window that is larger than ops' window size (`migrate throttle --window-rows N`)
 * before it is copied: the window keeps its first N rows, and the rest become new pending
 * windows right after it in key order (later windows move up), which the next pump sends.
 * Smaller windows mean shorter transactions on V1 and V2 and a finer-grained throttle. Only a
 * window that no worker has started is split; the bounds come from V1 in one snapshot.
 */
export async function splitWindow(
  deps: { v1: Pool; v2: Pool; config: MigrationConfig },
  windowId: number,
  maxRows: number,
): Promise<{ split: boolean; pieces: number }> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const window = await loadWindow(v2, config, windowId);
  if (window.status !== 'queued' && window.status !== 'pending') return { split: false, pieces: 1 };
  if (window.expected_rows <= maxRows) return { split: false, pieces: 1 };
  const table = window.table_name;
  const m = MAPPINGS[table];
  const source = qualified(config.schemas.v1, m.v1Table);

  const reader = await v1.connect();
  let starts: Bound[];
  let total: number;
  try {
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await reader.query(`SET LOCAL DateStyle = 'ISO, YMD'`);
    const where = await bindWindow(reader, table, window, 'v1');
    if (m.windowKey === 'id') {
      const { rows } = await reader.query<{ id: string; n: string }>(
        `SELECT id, n FROM (SELECT id COLLATE "C" AS id, row_number() OVER (ORDER BY id COLLATE "C") AS rn,
                                   count(*) OVER () AS n FROM ${source} WHERE ${where}) s
          WHERE rn % $1 = 1 ORDER BY id`,
        [maxRows],
      );
      total = Number(rows[0]?.n ?? 0);
      // The first row (rn = 1) starts the window itself; every later one starts a piece.
      starts = rows.slice(1).map((r) => ({ id: r.id }));
    } else {
      // Through each device's ("deviceId", "timestamp") index, as the copy reads the window.
      const { rows } = await reader.query<{ ts: string; id: string; n: string }>(
        `SELECT ts::text AS ts, id::text AS id, n FROM (
           SELECT "timestamp" AS ts, id, row_number() OVER (ORDER BY "timestamp", id) AS rn, count(*) OVER () AS n
             FROM ${source} WHERE ${where} AND ${deviceSlices(config)}) s
          WHERE rn % $1 = 1 ORDER BY s.ts, s.id`,
        [maxRows],
      );
      total = Number(rows[0]?.n ?? 0);
      starts = rows.slice(1).map((r) => ({ ts: r.ts, id: r.id }));
    }
    await reader.query('COMMIT');
  } catch (error) {
    await reader.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    reader.release();
  }
  if (starts.length === 0) return { split: false, pieces: 1 };

  const pieces = starts.length + 1;
  const client = await v2.connect();
  try {
    await client.query('BEGIN');
    // One split of a table at a time: the sequence numbers after it move.
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('iot-v2-migration.split.' || $1))`, [table]);
    const current = await client.query<{ status: string; seq: number; upper_bound: Bound | null }>(
      `SELECT status, seq, upper_bound FROM ${ctl}.windows WHERE id = $1 FOR UPDATE`,
      [windowId],
    );
    const row = current.rows[0];
    // Started, done or split meanwhile (another delivery): leave it.
    if (
      !row ||
      (row.status !== 'queued' && row.status !== 'pending') ||
      JSON.stringify(row.upper_bound) !== JSON.stringify(window.upper_bound)
    ) {
      await client.query('ROLLBACK');
      return { split: false, pieces: 1 };
    }
    const shift = pieces - 1;
    // Two steps, so that no two windows ever share a sequence number on the way.
    await client.query(`UPDATE ${ctl}.windows SET seq = -(seq + $3) WHERE table_name = $1 AND seq > $2`, [
      table,
      row.seq,
      shift,
    ]);
    await client.query(`UPDATE ${ctl}.windows SET seq = -seq WHERE table_name = $1 AND seq < 0`, [table]);
    const uppers: (Bound | null)[] = [...starts.slice(1), window.upper_bound];
    const sizes = starts.map((_, i) => (i < starts.length - 1 ? maxRows : total - maxRows * (pieces - 1)));
    await client.query(`UPDATE ${ctl}.windows SET upper_bound = $2, expected_rows = $3 WHERE id = $1`, [
      windowId,
      JSON.stringify(starts[0]),
      maxRows,
    ]);
    await client.query(
      `INSERT INTO ${ctl}.windows (table_name, seq, lower_bound, upper_bound, expected_rows)
       SELECT $1, s.seq, s.lo::jsonb, s.hi::jsonb, s.n
         FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[]) AS s(seq, lo, hi, n)`,
      [
        table,
        starts.map((_, i) => row.seq + 1 + i),
        starts.map((b) => JSON.stringify(b)),
        uppers.map((b) => (b === null ? null : JSON.stringify(b))),
        sizes,
      ],
    );
    await client.query(`UPDATE ${ctl}.backfill_plans SET windows = windows + $2 WHERE table_name = $1`, [
      table,
      shift,
    ]);
    await client.query(
      `INSERT INTO ${ctl}.audit_log (actor, action, details) VALUES ('worker', 'window.split', $1)`,
      [JSON.stringify({ windowId, table, rows: total, pieces, windowRows: maxRows })],
    );
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
  return { split: true, pieces };
}
