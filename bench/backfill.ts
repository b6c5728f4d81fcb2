/**
 * `npm run bench:backfill -- [--rows 1000000] [--storage both|partitioned|timescaledb] [--guide-seconds 60] [--pipeline-only]`
 *
 * Generates one V1 on one PostgreSQL server, then measures in one run, on that server:
 *  (p) pgcopydb: `pgcopydb clone --table-jobs 2 --index-jobs 2` of the whole V1 into an empty
 *      database (Debian's pgcopydb and PostgreSQL 15 with TimescaleDB, installed here first
 *      where they are missing, as .ci/run does for the tests);
 * and for each V2 telemetry storage (native partitions; a TimescaleDB hypertable), into a V2
 * database prepared by Phase 1:
 *  (c) this pipeline end to end (plan, stages, local queue at the default concurrency, real
 *      workers), timed over the whole backfill of every table, up to V2 consistent (indexes
 *      and foreign keys in place);
 *  (a) the limit: one `COPY (SELECT <mapped columns> FROM device_data) TO STDOUT` piped into
 *      `COPY telemetry FROM STDIN`;
 *  (b) the migration guide's approach: OFFSET pagination ordered by timestamp, 1,000 rows a
 *      batch, one multi-row INSERT per batch. It is quadratic, so it runs for a time budget
 *      and its rate is taken over the rows it did: its rate only falls as OFFSET grows, so this
 *      flatters the guide.
 * `vsPgcopydb` is the pipeline's rows/s over pgcopydb's, each over the whole V1 (every table).
 * Where PostgreSQL 15 with TimescaleDB cannot be had, it runs on embedded PostgreSQL, native
 * partitions only, without pgcopydb (`vsPgcopydb` null, the reason printed).
 * The workers' automatic throttle is off unless `--auto-throttle`: V1 and V2 share the one server
 * here, so V2's own load would read as V1 pressure and shrink the windows.
 * `--pipeline-only` leaves out (a) and (b) (their figures null): at 10M rows the limit's single
 * COPY alone takes longer than the pipeline, and the guide's rate is known.
 * One JSON line per storage; the last line is one JSON object holding them all.
 */
import { pipeline } from 'node:stream/promises';
import type { Pool } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { z } from 'zod';
import { startLocalPostgres } from '../lambdas/adapters/local/embedded-pg';
import { runBackfillLocally } from '../lambdas/adapters/local/local-backfill';
import type { LocalPostgres } from '../lambdas/adapters/local/pg-cluster';
import { startTimescalePostgres } from '../lambdas/adapters/local/timescale-pg';
import type { MigrationConfig } from '../lambdas/core/config';
import { v1Projection, v2Columns } from '../lambdas/core/mapping';
import { changeControl } from '../lambdas/core/backfill/control';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { ensurePgcopydb, pgcopydbClone } from './pgcopydb';
import { benchHelp, benchV1, benchV2, log, seconds, sizeFlags } from './support';

const flags = z
  .object({
    ...sizeFlags,
    guideSeconds: z.coerce
      .number()
      .min(1)
      .default(60)
      .describe('time budget of the guide’s OFFSET approach, in seconds'),
    storage: z
      .enum(['both', 'partitioned', 'timescaledb'])
      .default('both')
      .describe('V2 telemetry storage(s) to measure: native partitions, a TimescaleDB hypertable, or both'),
    autoThrottle: z
      .boolean()
      .default(false)
      .describe(
        'keep the workers’ automatic throttle on (off by default here: V1 and V2 share one server, so V2’s own load reads as V1 pressure)',
      ),
    pipelineOnly: z
      .boolean()
      .default(false)
      .describe('measure pgcopydb and the pipeline only, not the limit and the guide (their figures null)'),
  })
  .strict();

type Storage = 'partitioned' | 'timescaledb';

const round3 = (n: number) => Math.round(n * 1000) / 1000;

/** Rows in every V1 table (what pgcopydb copies, and what the backfill copies). */
async function v1Rows(v1: Pool): Promise<number> {
  const { rows } = await v1.query(
    `SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM devices) + (SELECT count(*) FROM device_data) + (SELECT count(*) FROM alerts) AS n`,
  );
  return Number(rows[0].n);
}

/** The pipeline, the limit and the guide into one storage's V2. */
async function measureStorage(
  pg: LocalPostgres,
  v1: Pool,
  storage: Storage,
  rows: number,
  guideBudget: number | null,
  autoThrottle: boolean,
): Promise<{
  pipelineSeconds: number;
  stages: { planSeconds: number; windowsSeconds: number; indexSeconds: number };
  pipelineRowsPerSec: number;
  limitRowsPerSec: number | null;
  guideRowsPerSec: number | null;
  rowsCopied: number;
}> {
  const { v2, config, close } = await benchV2(pg, v1, `v2_${storage}`, storage);
  try {
    if (!autoThrottle)
      await changeControl(
        { v2, config, actor: 'bench:backfill' },
        { autoThrottle: false, reason: 'V1 and V2 share the benchmark server' },
      );
    return await measure(v1, v2, config, storage, rows, guideBudget);
  } finally {
    await close();
  }
}

async function measure(
  v1: Pool,
  v2: Pool,
  config: MigrationConfig,
  storage: Storage,
  rows: number,
  guideBudget: number | null,
) {
  const telemetryCount = async () =>
    Number((await v2.query('SELECT count(*) AS n FROM telemetry')).rows[0].n);
  await v2.query('CHECKPOINT');

  // (c) the pipeline
  log(
    `${storage}: pipeline, concurrency ${config.batch.concurrency}, windows of ${config.batch.telemetryWindowRows} rows`,
  );
  let t = process.hrtime.bigint();
  let lastLog = 0;
  const progress = await runBackfillLocally(
    { v1, v2, config },
    {
      onProgress: (p) => {
        if (Date.now() - lastLog > 2000) {
          lastLog = Date.now();
          log(
            `  windows ${p.windowsDone}/${p.windowsTotal}, ${p.rowsCopied.toLocaleString('en-US')} rows, ${p.rowsPerSecond.toLocaleString('en-US')} rows/s`,
          );
        }
      },
    },
  );
  const pipelineSeconds = seconds(t);
  const ended = Date.now();
  // Where the pipeline's time went: until the first window started (planning), the windows,
  // and after the last window was done (the deferred index builds).
  const span = (
    await v2.query<{ first: string; last: string }>(
      `SELECT extract(epoch FROM min(started_at)) * 1000 AS first, extract(epoch FROM max(finished_at)) * 1000 AS last
         FROM migration_control.windows`,
    )
  ).rows[0];
  const began = ended - pipelineSeconds * 1000;
  const stages = {
    planSeconds: round3((Number(span.first) - began) / 1000),
    windowsSeconds: round3((Number(span.last) - Number(span.first)) / 1000),
    indexSeconds: round3((ended - Number(span.last)) / 1000),
  };
  log(
    `${storage}: plan ${stages.planSeconds} s, windows ${stages.windowsSeconds} s, after the last window ${stages.indexSeconds} s`,
  );
  if ((await telemetryCount()) !== rows || !progress.complete)
    throw new Error('pipeline did not copy every row');
  log(
    `${storage}: pipeline: ${rows.toLocaleString('en-US')} telemetry rows (all tables: ${progress.rowsCopied.toLocaleString('en-US')}) in ${pipelineSeconds.toFixed(2)} s`,
  );

  if (guideBudget === null)
    return {
      pipelineSeconds,
      stages,
      pipelineRowsPerSec: rows / pipelineSeconds,
      limitRowsPerSec: null,
      guideRowsPerSec: null,
      rowsCopied: progress.rowsCopied,
    };

  // (a) the limit
  await v2.query('TRUNCATE telemetry');
  await v2.query('CHECKPOINT');
  const reader = await v1.connect();
  const writer = await v2.connect();
  t = process.hrtime.bigint();
  await reader.query(`SELECT set_config('migration.tenant_id', $1, false)`, [config.tenant.id]);
  await pipeline(
    reader.query(copyTo(`COPY (SELECT ${v1Projection('telemetry')} FROM device_data) TO STDOUT`)),
    writer.query(
      copyFrom(
        `COPY telemetry (${v2Columns('telemetry')
          .map((c) => `"${c}"`)
          .join(', ')}) FROM STDIN`,
      ),
    ),
  );
  const limitSeconds = seconds(t);
  reader.release();
  writer.release();
  if ((await telemetryCount()) !== rows) throw new Error('limit copy did not copy every row');
  log(`${storage}: limit: ${limitSeconds.toFixed(2)} s`);

  // (b) the guide
  await v2.query('TRUNCATE telemetry');
  await v2.query('CHECKPOINT');
  t = process.hrtime.bigint();
  let guideRows = 0;
  for (let offset = 0; seconds(t) < guideBudget; offset += 1000) {
    const batch = await v1.query(
      `SELECT id, "deviceId", "timestamp", data, protocol, source FROM device_data ORDER BY "timestamp" LIMIT 1000 OFFSET $1`,
      [offset],
    );
    if (batch.rows.length === 0) break;
    const values: unknown[] = [];
    const tuples = batch.rows.map((r, i) => {
      // As the guide's createMany: no legacy id (so OFFSET pages that overlap on duplicate
      // timestamps insert duplicates instead of failing: the guide's own data bug).
      values.push(
        config.tenant.id,
        r.deviceId,
        r.timestamp,
        JSON.stringify(r.data),
        r.protocol,
        r.source ?? 'migrated',
        'GOOD',
      );
      const b = i * 7;
      return `($${b + 1}, $${b + 2}, $${b + 3}::timestamp AT TIME ZONE 'UTC', $${b + 4}::jsonb, $${b + 5}, $${b + 6}, $${b + 7})`;
    });
    await v2.query(
      `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, quality) VALUES ${tuples.join(', ')}`,
      values,
    );
    guideRows += batch.rows.length;
  }
  const guideSeconds = seconds(t);
  log(
    `${storage}: guide: ${guideRows.toLocaleString('en-US')} rows in ${guideSeconds.toFixed(2)} s${guideRows < rows ? ' (time budget reached)' : ''}`,
  );
  return {
    pipelineSeconds,
    stages,
    pipelineRowsPerSec: rows / pipelineSeconds,
    limitRowsPerSec: rows / limitSeconds,
    guideRowsPerSec: guideRows / guideSeconds,
    rowsCopied: progress.rowsCopied,
  };
}

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    flags,
    benchHelp(
      'bench:backfill',
      'Times the backfill pipeline against pgcopydb, a raw COPY pipe (the limit) and the guide’s OFFSET approach, per V2 telemetry storage.',
      { guideSeconds: 'S', storage: 'both|partitioned|timescaledb' },
    ),
    'bench:backfill',
  );
  const why = ensurePgcopydb();
  if (why) log(`no pgcopydb comparison: ${why}`);
  const storages: Storage[] = why
    ? ['partitioned']
    : args.storage === 'both'
      ? ['partitioned', 'timescaledb']
      : [args.storage];
  if (why && args.storage === 'timescaledb') throw new Error(`--storage timescaledb: ${why}`);
  const pg = why ? await startLocalPostgres() : await startTimescalePostgres();
  log(`server: ${pg.label}`);
  const v1 = await benchV1(pg, args.rows, { devices: args.devices });
  try {
    const total = await v1Rows(v1);
    let pgcopydb: { seconds: number; rowsPerSec: number } | null = null;
    if (!why) {
      await pg.createDatabase('pgcopydb_target');
      await v1.query('CHECKPOINT');
      const s = await pgcopydbClone(pg.url('v1'), pg.url('pgcopydb_target'));
      await pg.dropDatabase('pgcopydb_target');
      pgcopydb = { seconds: s, rowsPerSec: total / s };
      log(`pgcopydb: ${total.toLocaleString('en-US')} rows (whole V1) in ${s.toFixed(2)} s`);
    }
    const result: Record<string, unknown> = {
      rows: args.rows,
      v1Rows: total,
      server: pg.label,
      pgcopydbSeconds: pgcopydb ? round3(pgcopydb.seconds) : null,
      pgcopydbRowsPerSec: pgcopydb ? Math.round(pgcopydb.rowsPerSec) : null,
    };
    for (const storage of storages) {
      const m = await measureStorage(
        pg,
        v1,
        storage,
        args.rows,
        args.pipelineOnly ? null : args.guideSeconds,
        args.autoThrottle,
      );
      const { limitRowsPerSec: limit, guideRowsPerSec: guide } = m;
      const line = {
        storage,
        rows: args.rows,
        pipelineSeconds: round3(m.pipelineSeconds),
        ...m.stages,
        limitRowsPerSec: limit === null ? null : Math.round(limit),
        guideRowsPerSec: guide === null ? null : Math.round(guide),
        pipelineRowsPerSec: Math.round(m.pipelineRowsPerSec),
        pgcopydbRowsPerSec: pgcopydb ? Math.round(pgcopydb.rowsPerSec) : null,
        vsLimit: limit === null ? null : round3(m.pipelineRowsPerSec / limit),
        vsGuide: guide === null ? null : Math.round((m.pipelineRowsPerSec / guide) * 100) / 100,
        // Whole V1 each: every row the backfill copied over its whole time, against pgcopydb's.
        vsPgcopydb: pgcopydb ? round3(m.rowsCopied / m.pipelineSeconds / pgcopydb.rowsPerSec) : null,
        autoThrottle: args.autoThrottle,
      };
      console.log(JSON.stringify(line));
      result[storage] = line;
    }
    console.log(JSON.stringify(result));
  } finally {
    await v1.end();
    await pg.stop();
  }
}

main().catch(exitOnError);
