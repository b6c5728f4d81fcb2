/**
 * `npm run bench:verify -- [--rows 1000000] [--storage partitioned|timescaledb] [--compressed]`
 *
 * Generates V1, backfills V2, then times in one run, on the telemetry table:
 *  - countSeconds: `SELECT count(*)` of the table on both sides, run concurrently (as the
 *    verifier runs its two sides);
 *  - verifySeconds: Phase 3 verification of every telemetry window, as `npm run rehearse` runs
 *    it: slices fanned out through the local queue at the default concurrency, each one's count
 *    and checksum of every mapped column on both sides (window by window where they differ),
 *    then the report with its sampled deep compare.
 * With `--storage timescaledb` (PostgreSQL 15 with TimescaleDB installed) V2 telemetry is a
 * hypertable, V1 on the same server; `--compressed` compresses every chunk before timing.
 * The last line is one JSON object.
 */
import { z } from 'zod';
import { runBackfillLocally } from '../lambdas/adapters/local/local-backfill';
import { runVerificationLocally } from '../lambdas/adapters/local/local-verify';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { benchEnv, benchHelp, log, seconds, sizeFlags } from './support';

const flags = z
  .object({
    ...sizeFlags,
    repeat: z.coerce
      .number()
      .int()
      .min(1)
      .max(10)
      .default(3)
      .describe('runs of each measurement (the best counts)'),
    storage: z.enum(['partitioned', 'timescaledb']).default('partitioned').describe('V2 telemetry storage'),
    compressed: z.boolean().default(false).describe('compress the hypertable first (timescaledb only)'),
  })
  .strict()
  .refine((f) => !f.compressed || f.storage === 'timescaledb', {
    message: '--compressed needs --storage timescaledb',
    path: ['compressed'],
  });

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    flags,
    benchHelp(
      'bench:verify',
      'Times Phase 3 verification of the telemetry table against SELECT count(*) on both sides.',
      {
        repeat: 'N',
        storage: 'partitioned|timescaledb',
        compressed: '',
      },
    ),
    'bench:verify',
  );
  const env = await benchEnv(args.rows, { devices: args.devices, storage: args.storage });
  const { v1, v2, config } = env;
  try {
    log('backfilling V2');
    await runBackfillLocally({ v1, v2, config });
    if (args.compressed) {
      const t = process.hrtime.bigint();
      const { rows } = await v2.query(`SELECT count(compress_chunk(c)) AS n FROM show_chunks('telemetry') c`);
      log(`compressed ${rows[0].n} chunks in ${seconds(t).toFixed(1)} s`);
    }
    await v2.query('VACUUM ANALYZE');
    // Best of `repeat` runs of each, so a passing hiccup of the machine does not decide.
    let countSeconds = Infinity;
    let verifySeconds = Infinity;
    for (let i = 0; i < args.repeat; i++) {
      let t = process.hrtime.bigint();
      const [a, b] = await Promise.all([
        v1.query('SELECT count(*) AS n FROM device_data'),
        v2.query('SELECT count(*) AS n FROM telemetry'),
      ]);
      countSeconds = Math.min(countSeconds, seconds(t));
      if (Number(a.rows[0].n) !== args.rows || Number(b.rows[0].n) !== args.rows)
        throw new Error('row counts differ');
      t = process.hrtime.bigint();
      const report = await runVerificationLocally(
        { v1, v2, config },
        { tables: ['telemetry'], repair: false },
      );
      const s = seconds(t);
      verifySeconds = Math.min(verifySeconds, s);
      if (!report.clean || report.tables.telemetry.v2Rows !== args.rows)
        throw new Error('verification was not clean');
      log(
        `run ${i + 1}: count ${countSeconds.toFixed(3)} s, verify ${s.toFixed(3)} s (${report.tables.telemetry.windows} windows, sample ${report.sample.checked})`,
      );
    }
    console.log(
      JSON.stringify({
        rows: args.rows,
        countSeconds: Math.round(countSeconds * 1000) / 1000,
        verifySeconds: Math.round(verifySeconds * 1000) / 1000,
        verifyRowsPerSec: Math.round(args.rows / verifySeconds),
        vsCount: Math.round((verifySeconds / countSeconds) * 100) / 100,
      }),
    );
  } finally {
    await env.close();
  }
}

main().catch(exitOnError);
