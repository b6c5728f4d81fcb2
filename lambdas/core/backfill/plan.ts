import type { PoolClient } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema } from '../db';
import { MAPPINGS, TABLE_ORDER, type MappedTable } from '../mapping';
import { ensureMonthlyPartitions, recordedTelemetryStorage } from '../storage';
import { qualified, type Bound } from '../windows';
import type { BackfillDeps } from './copy';
import { deferTelemetryIndexes } from './deferred-indexes';
import { precreateChunks, type TelemetrySpan } from './chunks';

export interface PlanResult {
  tables: Record<MappedTable, { windows: number; expectedRows: number; planned: 'now' | 'before' }>;
  partitionsCreated: string[];
  /** Hypertable chunks created for V1 telemetry's time range before its windows (chunks.ts). */
  chunksCreated: string[];
  /** V2 telemetry indexes dropped for the load, built when its last window is done (deferred-indexes.ts). */
  indexesDeferred: string[];
}

/**
 * Working memory of the one V1 session that numbers a table's rows in key order to plan its
 * windows: at 1M telemetry rows the sort stays in memory (1.0 s here instead of 3.0 s with
 * PostgreSQL's default 4MB, which sorts on disk); larger tables sort in fewer, longer runs.
 */
const PLAN_WORK_MEM = '128MB';

/**
 * Above this many rows, a time-keyed table's windows are planned from a sample of its rows
 * instead of numbering every row in key order: at 1M telemetry rows that sort takes 0.5 s here,
 * the sample 0.04 s; at 10M it took 14–18 s (it spills to disk), the sample's scan about 1 s.
 */
export const PLAN_SAMPLE_ABOVE_ROWS = 500_000;
/** Sampled rows per planned window: window sizes then stay within a few percent of the target. */
const SAMPLE_ROWS_PER_WINDOW = 200;

export interface PlanOptions {
  /** Plan time-keyed tables larger than this from a sample (default PLAN_SAMPLE_ABOVE_ROWS). */
  sampleAboveRows?: number;
}

/**
 * Window boundaries of a V1 table: every N-th key in key order starts a new window. A large
 * time-keyed table takes every N-th key of a row sample (`TABLESAMPLE BERNOULLI`, each row with
 * the same chance) instead, N scaled down to the sample: the windows still cover every key
 * exactly once (any boundaries do), only their sizes vary a little around the target.
 */
async function boundaries(
  client: PoolClient,
  config: MigrationConfig,
  table: MappedTable,
  sampleAboveRows: number,
): Promise<{ starts: Bound[]; total: number; sampled: boolean }> {
  const m = MAPPINGS[table];
  const source = qualified(config.schemas.v1, m.v1Table);
  const size = table === 'telemetry' ? config.batch.telemetryWindowRows : config.batch.entityWindowRows;
  const total = Number((await client.query(`SELECT count(*) AS n FROM ${source}`)).rows[0].n);
  if (m.windowKey === 'id') {
    const { rows } = await client.query<{ id: string }>(
      `SELECT id FROM (SELECT id COLLATE "C" AS id, row_number() OVER (ORDER BY id COLLATE "C") AS rn FROM ${source}) s
        WHERE rn % $1 = 1 AND rn > 1 ORDER BY id`,
      [size],
    );
    return { starts: rows.map((r) => ({ id: r.id })), total, sampled: false };
  }
  const windows = Math.ceil(total / size);
  const sampled = total > sampleAboveRows && windows > 1;
  // Percent of rows sampled, and every how many sampled rows a window starts.
  const percent = sampled ? Math.min(100, (100 * SAMPLE_ROWS_PER_WINDOW * windows) / total) : 100;
  const step = sampled ? Math.max(1, Math.round((size * percent) / 100)) : size;
  const { rows } = await client.query<{ ts: string; id: string }>(
    `SELECT ts::text AS ts, id::text AS id FROM (
       SELECT "timestamp" AS ts, id, row_number() OVER (ORDER BY "timestamp", id) AS rn
         FROM ${source}${sampled ? ' TABLESAMPLE BERNOULLI ($2) REPEATABLE (1)' : ''}) s
      WHERE rn % $1 = 1 AND rn > 1 ORDER BY s.ts, s.id`,
    sampled ? [step, percent] : [step],
  );
  return { starts: rows.map((r) => ({ ts: r.ts, id: r.id })), total, sampled };
}

/** At most this many months between the first and last window boundary get a partition each. */
const MONTHS_SPANNED_AT_MOST = 120;

/**
 * The months V1 telemetry needs a partition for, years 1-9999 (what a partition name and a
 * JavaScript Date hold; rows at the ends of time stay in the default partition). Between the
 * planned first and last window boundary, every month (the windows there hold the bulk of the
 * rows: no row needs reading for it); before the first and after the last, the months that hold a
 * row, read from the rows of those two windows only (odd rows far from the rest land there).
 * Where the boundaries are more than ten years apart, or there are none, only the months that
 * hold a row, which takes sorting every row's month (0.25 s a million rows here).
 */
async function telemetryMonths(
  reader: PoolClient,
  config: MigrationConfig,
  starts: Bound[],
): Promise<Date[]> {
  const inRange = (column: string) => `${column} >= '0001-01-01' AND ${column} < '10000-01-01'`;
  const lo = starts[0]?.ts;
  const hi = starts[starts.length - 1]?.ts;
  // Every month from the first boundary's to the last's, none read from a row.
  const inner =
    lo && hi
      ? (
          await reader.query<{ m: Date }>(
            `SELECT m AT TIME ZONE 'UTC' AS m
               FROM generate_series(date_trunc('month', $1::timestamp), date_trunc('month', $2::timestamp), interval '1 month') AS m
              WHERE (extract(year FROM $2::timestamp) - extract(year FROM $1::timestamp)) * 12
                    + extract(month FROM $2::timestamp) - extract(month FROM $1::timestamp) < $3
                AND ${inRange('m')}`,
            [lo, hi, MONTHS_SPANNED_AT_MOST],
          )
        ).rows
      : [];
  // The months that hold a row, of the rows outside those (all rows where there are none): a
  // plain filter, so PostgreSQL scans in parallel and keeps one entry a month.
  const outside = inner.length > 0 ? `("timestamp" < $1::timestamp OR "timestamp" >= $2::timestamp) AND` : '';
  const outer = await reader.query<{ m: Date }>(
    `SELECT DISTINCT date_trunc('month', "timestamp") AT TIME ZONE 'UTC' AS m
       FROM ${qualified(config.schemas.v1, 'device_data')} WHERE ${outside} ${inRange('"timestamp"')}`,
    inner.length > 0 ? [lo, hi] : [],
  );
  const months = new Map([...inner, ...outer.rows].map((r) => [r.m.getTime(), r.m]));
  return [...months.values()].sort((a, b) => b.getTime() - a.getTime()).slice(0, 1200);
}

/**
 * Splits each V1 table into windows of about the target row count and records them in the
 * control schema. Planning again finds the recorded plan and adds nothing. For partitioned
 * telemetry, the monthly partitions of every month that holds data are created first; once
 * telemetry is planned, its secondary indexes are dropped for the load (deferred-indexes.ts).
 */
export async function planBackfill(deps: BackfillDeps, options: PlanOptions = {}): Promise<PlanResult> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const result: PlanResult = {
    tables: {} as PlanResult['tables'],
    partitionsCreated: [],
    chunksCreated: [],
    indexesDeferred: [],
  };
  // V1 telemetry's time range where V2 telemetry is a hypertable: its chunks are made after planning.
  let hypertableSpan: TelemetrySpan | undefined;
  const planned = new Map(
    (
      await v2.query<{ table_name: MappedTable; windows: number; expected_rows: string }>(
        `SELECT * FROM ${ctl}.backfill_plans`,
      )
    ).rows.map((r) => [r.table_name, r]),
  );
  for (const table of TABLE_ORDER) {
    const before = planned.get(table);
    if (before) {
      result.tables[table] = {
        windows: before.windows,
        expectedRows: Number(before.expected_rows),
        planned: 'before',
      };
      continue;
    }
    const reader = await v1.connect();
    let plan: { starts: Bound[]; total: number; sampled: boolean };
    try {
      await reader.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
      await reader.query(`SET LOCAL DateStyle = 'ISO, YMD'`);
      await reader.query(`SELECT set_config('work_mem', $1, true)`, [PLAN_WORK_MEM]);
      plan = await boundaries(reader, config, table, options.sampleAboveRows ?? PLAN_SAMPLE_ABOVE_ROWS);
      if (table === 'telemetry') {
        const storage = await recordedTelemetryStorage(v2, config);
        if (storage === 'partitioned') {
          const months = await telemetryMonths(reader, config, plan.starts);
          result.partitionsCreated = await ensureMonthlyPartitions(v2, config.schemas.v2, months);
        } else if (storage === 'timescaledb') {
          // From the first window boundary to the last: the first and last windows, which run
          // to the ends of time (and hold any odd rows far from the rest), make their own.
          const [first, last] = [plan.starts[0]?.ts, plan.starts[plan.starts.length - 1]?.ts];
          if (first && last) hypertableSpan = { first, last };
        }
      }
      await reader.query('COMMIT');
    } finally {
      reader.release();
    }
    const size = table === 'telemetry' ? config.batch.telemetryWindowRows : config.batch.entityWindowRows;
    const count = plan.starts.length + 1;
    const client = await v2.connect();
    try {
      await client.query('BEGIN');
      // Two planners at once: the second waits here, then finds the plan and adds nothing.
      await client.query(`LOCK TABLE ${ctl}.backfill_plans IN EXCLUSIVE MODE`);
      const again = await client.query(`SELECT windows FROM ${ctl}.backfill_plans WHERE table_name = $1`, [
        table,
      ]);
      if (again.rows.length > 0) {
        await client.query('ROLLBACK');
        result.tables[table] = {
          windows: again.rows[0].windows,
          expectedRows: plan.total,
          planned: 'before',
        };
        continue;
      }
      const lowers: (string | null)[] = [null, ...plan.starts.map((b) => JSON.stringify(b))];
      const uppers: (string | null)[] = [...plan.starts.map((b) => JSON.stringify(b)), null];
      // A sampled plan's windows hold about the same number of rows each: the total shared out.
      const each = plan.sampled ? Math.round(plan.total / count) : size;
      const expected = lowers.map((_, i) =>
        i < count - 1 ? each : Math.max(0, plan.total - each * (count - 1)),
      );
      await client.query(
        `INSERT INTO ${ctl}.windows (table_name, seq, lower_bound, upper_bound, expected_rows)
         SELECT $1, s.seq, s.lo::jsonb, s.hi::jsonb, s.n
           FROM unnest($2::int[], $3::text[], $4::text[], $5::bigint[]) AS s(seq, lo, hi, n)`,
        [table, lowers.map((_, i) => i + 1), lowers, uppers, expected],
      );
      await client.query(
        `INSERT INTO ${ctl}.backfill_plans (table_name, windows, expected_rows) VALUES ($1, $2, $3)`,
        [table, count, plan.total],
      );
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
    result.tables[table] = { windows: count, expectedRows: plan.total, planned: 'now' };
  }
  // Only by the planner that planned telemetry: a plan found again (a rerun, a second planner)
  // finds the indexes already dropped and recorded, or, its backfill done, built again.
  if (result.tables.telemetry?.planned === 'now') {
    result.indexesDeferred = (await deferTelemetryIndexes(v2, config)).map((i) => i.name);
    // After the drop, so the new chunks are made without the deferred indexes.
    if (hypertableSpan) result.chunksCreated = await precreateChunks(v2, config, hypertableSpan);
  }
  return result;
}
