/**
 * The Prisma extension's overhead: per-write latency of the same writes through plain Prisma,
 * through `withMigration` with dual-write off (pass-through), and with it on (V1, then V2 and
 * the V1 re-read that makes out-of-order writes converge).
 *
 * On an embedded PostgreSQL with a small generated V1 and a prepared V2, each mode runs the same
 * mix one write at a time (a telemetry insert, a device update, an alert create and its delete:
 * single-row writes, as a backend's request handler makes them), in rounds that alternate the
 * modes so that the machine's other load falls on all three alike. The last line printed is one
 * JSON object:
 * {"writesPerMode":…,"plain":{"p50Ms":…,"p99Ms":…},"off":{…},"on":{…},"byOperation":{…}}
 *
 * Usage: npm run bench:prisma -- [--writes N] [--rows N] [--devices N]
 */
import '../lambdas/core/polyfills';
import { PrismaPg } from '@prisma/adapter-pg';
import { z } from 'zod';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { withMigration } from '../client/prisma';
import { runBackfillLocally } from '../lambdas/adapters/local/local-backfill';
import type { QueuePort } from '../lambdas/ports/queue';
import { PrismaClient } from '../prisma/v1/generated/client';
import { benchEnv, benchHelp, log, sizeFlags } from './support';

const flags = z
  .object({
    writes: z.coerce.number().int().min(40).max(1_000_000).default(2_000).describe('writes per mode'),
    rows: sizeFlags.rows.default(10_000),
    devices: sizeFlags.devices.default(100),
  })
  .strict();

const parseFlags = (argv: string[]) =>
  parseArgs(
    argv,
    flags,
    benchHelp(
      'bench:prisma',
      'Per-write latency (p50, p99) of the same Prisma writes plain, through withMigration with dual-write off, and on.',
      { writes: 'N' },
    ),
    'bench:prisma',
  );

const OPERATIONS = ['deviceData.create', 'device.update', 'alert.create', 'alert.delete'] as const;
type Operation = (typeof OPERATIONS)[number];
type Mode = 'plain' | 'off' | 'on';

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const round = (ms: number) => Math.round(ms * 1000) / 1000;
function summary(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50Ms: round(percentile(sorted, 50)), p99Ms: round(percentile(sorted, 99)) };
}

async function main(): Promise<void> {
  const { writes, rows, devices } = parseFlags(process.argv.slice(2));
  const env = await benchEnv(rows, { devices });
  const prisma = new PrismaClient({ adapter: new PrismaPg(env.v1) });
  try {
    const sent: string[] = [];
    const repairQueue: QueuePort = {
      sendAll: async (bodies) => {
        sent.push(...bodies);
        return { sent: bodies.length, calls: 1 };
      },
    };
    const router = { on: false, dualWriteEnabled: () => router.on, route: () => 'v1' as const };
    const extended = withMigration(prisma, {
      v1: env.v1,
      v2: env.v2,
      router,
      repairQueue,
      tenantId: env.config.tenant.id,
      shadowReads: false,
    });
    // V2 holds V1's history (the backfill done), as while a backend dual-writes.
    await runBackfillLocally({ v1: env.v1, v2: env.v2, config: env.config });
    const ids = (await prisma.device.findMany({ select: { id: true }, orderBy: { id: 'asc' } })).map(
      (d) => d.id,
    );

    const samples: Record<Mode, Record<Operation, number[]>> = {
      plain: { 'deviceData.create': [], 'device.update': [], 'alert.create': [], 'alert.delete': [] },
      off: { 'deviceData.create': [], 'device.update': [], 'alert.create': [], 'alert.delete': [] },
      on: { 'deviceData.create': [], 'device.update': [], 'alert.create': [], 'alert.delete': [] },
    };
    let n = 0;
    const one = async (mode: Mode, measure: boolean) => {
      const db = mode === 'plain' ? prisma : extended;
      router.on = mode === 'on';
      const device = ids[n % ids.length];
      const alertId = `bench_alert_${n++}`;
      const timed = async (op: Operation, write: () => Promise<unknown>) => {
        const start = process.hrtime.bigint();
        await write();
        if (measure) samples[mode][op].push(Number(process.hrtime.bigint() - start) / 1e6);
      };
      await timed('deviceData.create', () =>
        db.deviceData.create({
          data: { deviceId: device, timestamp: new Date(), data: { n }, protocol: 'MQTT' },
        }),
      );
      await timed('device.update', () =>
        db.device.update({ where: { id: device }, data: { lastSeenAt: new Date(), status: 'ONLINE' } }),
      );
      await timed('alert.create', () =>
        db.alert.create({ data: { id: alertId, deviceId: device, severity: 'LOW', message: 'bench' } }),
      );
      await timed('alert.delete', () => db.alert.delete({ where: { id: alertId } }));
    };

    const modes: Mode[] = ['plain', 'off', 'on'];
    log(`warming up (connections, statement caches, V2 templates)`);
    for (let i = 0; i < 30; i++) for (const mode of modes) await one(mode, false);
    const perRound = 10;
    const rounds = Math.ceil(writes / OPERATIONS.length / perRound);
    for (let r = 0; r < rounds; r++) {
      // Rotate which mode goes first, so none always follows another.
      for (let k = 0; k < modes.length; k++) {
        const mode = modes[(r + k) % modes.length];
        for (let i = 0; i < perRound; i++) await one(mode, true);
      }
      if ((r + 1) % Math.max(1, Math.floor(rounds / 5)) === 0) log(`round ${r + 1}/${rounds}`);
    }
    if (sent.length > 0) throw new Error(`${sent.length} dual write(s) failed during the benchmark`);

    const all = (mode: Mode) => OPERATIONS.flatMap((op) => samples[mode][op]);
    const result = {
      writesPerMode: all('plain').length,
      plain: summary(all('plain')),
      off: summary(all('off')),
      on: summary(all('on')),
      byOperation: Object.fromEntries(
        OPERATIONS.map((op) => [
          op,
          Object.fromEntries(modes.map((mode) => [mode, summary(samples[mode][op])])),
        ]),
      ),
    };
    for (const mode of modes) {
      log(`${mode.padEnd(5)} p50 ${result[mode].p50Ms} ms  p99 ${result[mode].p99Ms} ms`);
    }
    console.log(JSON.stringify(result));
  } finally {
    await prisma.$disconnect();
    await env.close();
  }
}

main().catch(exitOnError);
