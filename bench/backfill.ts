/**
 * `npm run bench:backfill -- [--rows 1000000] [--guide-seconds 60]`
 *
 * Generates V1 on embedded PostgreSQL, then measures in one run, into the same V2 telemetry
 * table (emptied between runs):
 *  (c) this pipeline end to end (plan, stages, local queue at the default concurrency, real
 *      workers), timed over the whole backfill of every table;
 *  (a) the limit: one `COPY (SELECT <mapped columns> FROM device_data) TO STDOUT` piped into
 *      `COPY telemetry FROM STDIN`;
 *  (b) the migration guide's approach: OFFSET pagination ordered by timestamp, 1,000 rows a
 *      batch, one multi-row INSERT per batch. It is quadratic, so it runs for a time budget
 *      and its rate is taken over the rows it did: its rate only falls as OFFSET grows, so this
 *      flatters the guide.
 * The last line is one JSON object.
 */
import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { z } from 'zod';
import { runBackfillLocally } from '../lambdas/adapters/local/local-backfill';
import { v1Projection, v2Columns } from '../lambdas/core/mapping';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { benchEnv, benchHelp, log, seconds, sizeFlags } from './support';

const flags = z
  .object({
    ...sizeFlags,
    guideSeconds: z.coerce
      .number()
      .min(1)
      .default(60)
      .describe('time budget of the guide’s OFFSET approach, in seconds'),
  })
  .strict();

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    flags,
    benchHelp(
      'bench:backfill',
      'Times the backfill pipeline against a raw COPY pipe (the limit) and the guide’s OFFSET approach.',
      { guideSeconds: 'S' },
    ),
    'bench:backfill',
  );
  const env = await benchEnv(args.rows, { devices: args.devices });
  const { v1, v2, config } = env;
  try {
    const telemetryCount = async () =>
      Number((await v2.query('SELECT count(*) AS n FROM telemetry')).rows[0].n);

    // (c) the pipeline
    log(
      `pipeline: concurrency ${config.batch.concurrency}, windows of ${config.batch.telemetryWindowRows} rows`,
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
    if ((await telemetryCount()) !== args.rows || !progress.complete)
      throw new Error('pipeline did not copy every row');
    const pipelineRowsPerSec = args.rows / pipelineSeconds;
    log(
      `pipeline: ${args.rows.toLocaleString('en-US')} telemetry rows (all tables: ${progress.rowsCopied.toLocaleString('en-US')}) in ${pipelineSeconds.toFixed(2)} s`,
    );

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
    if ((await telemetryCount()) !== args.rows) throw new Error('limit copy did not copy every row');
    const limitRowsPerSec = args.rows / limitSeconds;
    log(`limit: ${limitSeconds.toFixed(2)} s`);

    // (b) the guide
    await v2.query('TRUNCATE telemetry');
    await v2.query('CHECKPOINT');
    t = process.hrtime.bigint();
    let guideRows = 0;
    for (let offset = 0; seconds(t) < args.guideSeconds; offset += 1000) {
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
    const guideRowsPerSec = guideRows / guideSeconds;
    log(
      `guide: ${guideRows.toLocaleString('en-US')} rows in ${guideSeconds.toFixed(2)} s${guideRows < args.rows ? ' (time budget reached)' : ''}`,
    );

    const round = (n: number) => Math.round(n);
    const result = {
      rows: args.rows,
      limitRowsPerSec: round(limitRowsPerSec),
      guideRowsPerSec: round(guideRowsPerSec),
      pipelineRowsPerSec: round(pipelineRowsPerSec),
      vsLimit: Math.round((pipelineRowsPerSec / limitRowsPerSec) * 1000) / 1000,
      vsGuide: Math.round((pipelineRowsPerSec / guideRowsPerSec) * 100) / 100,
    };
    console.log(JSON.stringify(result));
  } finally {
    await env.close();
  }
}

main().catch(exitOnError);
