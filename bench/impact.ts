/**
 * `npm run bench:impact -- [--rows 300000] [--devices 300] [--writes-per-second 60] [--idle-seconds 15]`
 *
 * What the backfill costs the backend. A synthetic IoT backend (the rehearsal's: Prisma through
 * the client's `withMigration`) writes to V1 at a steady rate in
 * three runs, on one embedded PostgreSQL holding V1 and V2 (dual-write off: the latency measured
 * is V1's alone, and no V2 write of the backend races the copy):
 *  (1) idle: no backfill, for `--idle-seconds`;
 *  (2) full: the whole backfill at the default concurrency, the automatic throttle off (after
 *      one unmeasured backfill, V2 emptied after it, so that both measured ones start warm);
 *  (3) throttled: the whole backfill again (V2 emptied first), the automatic throttle on, its
 *      commit-latency threshold set from the idle run (three times the median of the worker's
 *      own V1 probe sampled while idle, at least 1 ms); under pressure its windows shrink to the
 *      configuration's `throttle.pressureWindowRows`.
 * It prints each run's write latency p50/p99 and the backfill's rows/s. The last line is one
 * JSON object: {"p99IdleMs","p99FullMs","p99ThrottledMs","throttledVsIdle","throttledRowsPerSec",…}.
 */
import { Pool } from 'pg';
import { z } from 'zod';
import { LocalQueue } from '../lambdas/adapters/local/local-queue';
import { MemoryParameters } from '../lambdas/adapters/local/memory-parameters';
import { runBackfillLocally } from '../lambdas/adapters/local/local-backfill';
import { probeV1 } from '../lambdas/core/backfill/pressure';
import { changeControl, throttlePeriods } from '../lambdas/core/backfill/control';
import { ensureControlSchema } from '../lambdas/core/migration-state';
import { controlSchema } from '../lambdas/core/db';
import { parameterNames } from '../lambdas/ports/parameters';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { backendSettings, SyntheticBackend } from '../bin/rehearsal/load';
import { benchEnv, benchHelp, log, seconds, sizeFlags, type BenchEnv } from './support';

const flags = z
  .object({
    ...sizeFlags,
    rows: sizeFlags.rows.default(300_000),
    devices: sizeFlags.devices.default(300),
    writesPerSecond: z.coerce
      .number()
      .int()
      .min(3)
      .max(3000)
      .default(60)
      .describe('operations per second of the synthetic backend (a third are writes)'),
    idleSeconds: z.coerce.number().min(3).max(600).default(15).describe('length of the idle run, in seconds'),
    warmupSeconds: z.coerce
      .number()
      .min(0)
      .max(600)
      .default(15)
      .describe('the backend runs this long before the idle run, unmeasured'),
  })
  .strict();

const percentile = (values: number[], p: number) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};
const round = (n: number) => Math.round(n * 100) / 100;

interface RunFigures {
  writes: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  rowsPerSec?: number;
  seconds: number;
}

/**
 * One synthetic backend for all three runs (its ids never repeat); each run measures the writes
 * that started and ended while it ran.
 */
async function startBackend(env: BenchEnv, perSecond: number, warmupSeconds: number) {
  const names = parameterNames(env.config.ssmPrefix);
  const parameters = new MemoryParameters({ [names.trafficPercentage]: '0', [names.dualWrite]: 'off' });
  // The backend's own pools, as a separate application has: the backfill's sessions never queue it.
  const pools = [env.pg.url('v1'), env.pg.url('v2')].map((url) => {
    const pool = new Pool({ connectionString: url, max: 10 });
    pool.on('error', () => undefined);
    return pool;
  });
  const backend = new SyntheticBackend(pools[0], pools[1], parameters, {
    perSecond,
    ...backendSettings(env.config),
    // Dual-write is off in this benchmark: the repair queue stays empty.
    repairs: new LocalQueue({ visibilityTimeoutMs: 30_000, maxReceiveCount: 10, concurrency: 1 }),
  });
  await backend.start();
  // Warm-up, not measured: the first writes pay Prisma's, the pools' and the caches' start.
  await new Promise((resolve) => setTimeout(resolve, warmupSeconds * 1000));
  return {
    stop: async () => {
      await backend.stop();
      await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    },
    /** Runs `during` under the load; the write latencies and backfill rows/s meanwhile. */
    measure: async (during: () => Promise<number | undefined>): Promise<RunFigures> => {
      const first = backend.writeLatenciesMs.length;
      const errorsBefore = backend.stats.errors;
      const t = process.hrtime.bigint();
      const rows = await during();
      const elapsed = seconds(t);
      const latencies = backend.writeLatenciesMs.slice(first);
      const errors = backend.stats.errors - errorsBefore;
      // Errors are counted, not fatal: a write that failed has no latency, so they are reported.
      if (errors > 0) log(`  the backend saw ${errors} errors: ${backend.stats.firstErrors.join('; ')}`);
      return {
        writes: latencies.length,
        errors,
        p50Ms: round(percentile(latencies, 50)),
        p99Ms: round(percentile(latencies, 99)),
        seconds: round(elapsed),
        ...(rows === undefined ? {} : { rowsPerSec: Math.round(rows / elapsed) }),
      };
    },
  };
}

/** Empties V2's data and the backfill's windows, so that the next backfill starts afresh. */
async function resetBackfill(env: BenchEnv) {
  const ctl = controlSchema(env.config);
  const v2 = env.config.schemas.v2;
  await env.v2.query(`TRUNCATE "${v2}".telemetry, "${v2}".alerts, "${v2}".devices, "${v2}".users CASCADE`);
  await env.v2.query(`TRUNCATE ${ctl}.windows, ${ctl}.backfill_plans CASCADE`);
  await env.v2.query(`UPDATE ${ctl}.backfill_control SET next_start_at = now()`);
}

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    flags,
    benchHelp(
      'bench:impact',
      'Measures the backend’s V1 write latency while idle, under the full-speed backfill, and under the throttled backfill.',
      { writesPerSecond: 'N', idleSeconds: 'S', warmupSeconds: 'S' },
    ),
    'bench:impact',
  );
  const env = await benchEnv(args.rows, { devices: args.devices });
  try {
    await ensureControlSchema(env);
    const ops = (change: Parameters<typeof changeControl>[1]) =>
      changeControl({ v2: env.v2, config: env.config, actor: 'bench' }, change);
    const sleep = (s: number) => new Promise((resolve) => setTimeout(resolve, s * 1000));

    log(`idle: ${args.writesPerSecond} operations/s for ${args.idleSeconds} s`);
    // V1 was just generated: its dirty pages are flushed now, not during the idle run.
    await env.v1.query('CHECKPOINT');
    await env.v2.query('CHECKPOINT');
    const { stop, measure } = await startBackend(env, args.writesPerSecond, args.warmupSeconds);
    // While idle, the worker's own V1 probe is sampled: its commit round trip sets the threshold.
    const probes: number[] = [];
    const idle = await measure(async () => {
      const until = Date.now() + args.idleSeconds * 1000;
      while (Date.now() < until) {
        const { probe } = await probeV1(env.v1, { ...env.config.throttle, commitLatencyMs: 60_000 });
        if (probe.commitMs !== null) probes.push(probe.commitMs);
        await sleep(0.5);
      }
      return undefined;
    });
    log(`idle: p50 ${idle.p50Ms} ms, p99 ${idle.p99Ms} ms over ${idle.writes} writes`);

    // One unmeasured backfill first, so that both measured ones find V1's pages cached and V2's
    // partitions created: what differs between them is the throttle alone.
    await ops({ autoThrottle: false });
    await runBackfillLocally(env);
    await resetBackfill(env);
    log('full: the backfill at full speed, the automatic throttle off');
    const full = await measure(async () => {
      const progress = await runBackfillLocally(env);
      return progress.rowsCopied;
    });
    log(`full: p50 ${full.p50Ms} ms, p99 ${full.p99Ms} ms, backfill ${full.rowsPerSec} rows/s`);

    await resetBackfill(env);
    await ops({ autoThrottle: true });
    // Three times the idle probe's median, at least 1 ms: with a floor of 5 ms the probe (whose
    // idle round trip is well under a millisecond here) never saw pressure, and the throttle
    // never engaged (0 throttle periods at 300,000 rows).
    const idleProbeMs = round(percentile(probes, 50));
    const commitLatencyMs = Math.max(1, round(3 * idleProbeMs));
    // Pressure holds 5 s: meanwhile windows are split to pressureWindowRows (5,000 by
    // default), so that a worker probes V1 again after a short window, not a whole 50,000-row one.
    const throttle = {
      ...env.config.throttle,
      commitLatencyMs,
      pressureHoldSeconds: 5,
      pressureBackoffMs: 200,
    };
    log(`throttled: the automatic throttle on, V1 commit latency over ${commitLatencyMs} ms is pressure`);
    const throttled = await measure(async () => {
      const progress = await runBackfillLocally({ ...env, config: { ...env.config, throttle } });
      return progress.rowsCopied;
    });
    await stop();
    const periods = await throttlePeriods(env.v2, env.config);
    log(
      `throttled: p50 ${throttled.p50Ms} ms, p99 ${throttled.p99Ms} ms, backfill ${throttled.rowsPerSec} rows/s, ${periods.length} throttle periods`,
    );
    console.log(
      JSON.stringify({
        p99IdleMs: idle.p99Ms,
        p99FullMs: full.p99Ms,
        p99ThrottledMs: throttled.p99Ms,
        throttledVsIdle: round(throttled.p99Ms / idle.p99Ms),
        throttledRowsPerSec: throttled.rowsPerSec,
        fullRowsPerSec: full.rowsPerSec,
        throttledVsFullSpeed: round((throttled.rowsPerSec ?? 0) / (full.rowsPerSec ?? 1)),
        p50IdleMs: idle.p50Ms,
        p50FullMs: full.p50Ms,
        p50ThrottledMs: throttled.p50Ms,
        throttlePeriods: periods.length,
        backendErrors: idle.errors + full.errors + throttled.errors,
        commitLatencyThresholdMs: commitLatencyMs,
        idleProbeMedianMs: idleProbeMs,
        pressureWindowRows: throttle.pressureWindowRows,
        rows: args.rows,
        writesPerSecond: args.writesPerSecond,
      }),
    );
  } finally {
    await env.close();
  }
}

main().catch((error) => exitOnError(error));
