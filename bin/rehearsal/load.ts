import { PrismaPg } from '@prisma/adapter-pg';
import type { Pool } from 'pg';
import { PrismaWriteAfterWriteSwitchError, withMigration } from '../../client/prisma';
import { repairBatchHandler } from '../../lambdas/core/sync/repair';
import { TrafficRouter } from '../../client/traffic-router';
import type { LocalQueue } from '../../lambdas/adapters/local/local-queue';
import type { ParameterPort } from '../../lambdas/ports/parameters';
import { PrismaClient } from '../../prisma/v1/generated/client';

export interface LoadStats {
  operations: number;
  reads: number;
  writes: number;
  /** Writes by Prisma operation (`device.update`, `deviceData.createMany`, `$transaction`, …). */
  writesByOperation: Record<string, number>;
  readsFromV2: number;
  /** Errors the backend's callers saw (a V2 failure is not one: it goes to repair). */
  errors: number;
  v2Failures: number;
  repaired: number;
  firstErrors: string[];
  /** Writes made V2 first (after the write switch) through the DualWriter. */
  writesV2First: number;
  /** Rows those writes inserted (telemetry, alerts); each must be in V1 at the end. */
  rowsInsertedV2First: number;
  /** Of those, rows V1 does not hold when the backend stops (a lost reverse mirror). */
  rowsMissingInV1: number;
}

/**
 * A synthetic IoT backend for the rehearsal: at about `perSecond` operations a second it reads
 * devices through the TrafficRouter (V1 or V2 by key) and writes with Prisma through
 * `withMigration` (telemetry inserts one by one and in batches, device updates, alerts created,
 * acknowledged and deleted, nested writes, interactive transactions), with a repair worker
 * behind it, exactly as a real Prisma backend wired like client/README.md would. After the
 * write switch (V2 the write primary) Prisma's writes are refused, so it writes through
 * `$migration.writer` (V2 first, V1 mirrored), and remembers the rows it inserted so: each must
 * be in V1 when it stops, whether the writes were rolled back to V1 or not.
 */
export class SyntheticBackend {
  readonly stats: LoadStats = {
    operations: 0,
    reads: 0,
    writes: 0,
    writesByOperation: {},
    readsFromV2: 0,
    errors: 0,
    v2Failures: 0,
    repaired: 0,
    firstErrors: [],
    writesV2First: 0,
    rowsInsertedV2First: 0,
    rowsMissingInV1: 0,
  };
  /** Rows inserted V2 first, by V1 table. */
  private readonly insertedV2First = { device_data: [] as string[], alerts: [] as string[] };
  private lastV2Alert?: string;
  private readonly router: TrafficRouter;
  private readonly prisma: PrismaClient;
  private readonly db: ReturnType<typeof withMigration<PrismaClient>>;
  private timer?: NodeJS.Timeout;
  private inFlight = new Set<Promise<void>>();
  private devices: string[] = [];
  private tick = 0;
  /** Each write's round trip through the client, in ms (bench:impact's percentiles). */
  readonly writeLatenciesMs: number[] = [];

  constructor(
    private readonly v1: Pool,
    private readonly v2: Pool,
    parameters: ParameterPort,
    private readonly options: {
      perSecond: number;
      prefix: string;
      tenantId: string;
      v2Schema: string;
      v1Schema: string;
      /** The backend's repair queue (the rollback from the write switch waits for it). */
      repairs: LocalQueue;
    },
  ) {
    this.router = TrafficRouter.fromParameters(parameters, { prefix: options.prefix, refreshMs: 500 });
    const settings = { tenantId: options.tenantId, schemas: { v1: options.v1Schema, v2: options.v2Schema } };
    options.repairs.start(
      repairBatchHandler({ v1, v2, ...settings }, { onRepaired: () => this.stats.repaired++ }),
    );
    this.prisma = new PrismaClient({ adapter: new PrismaPg(v1, { schema: options.v1Schema }) });
    this.db = withMigration(this.prisma, {
      v1,
      v2,
      router: this.router,
      repairQueue: options.repairs,
      ...settings,
      shadowReads: false,
      onMetric: (name, value) => {
        if (name === 'DualWriteV2Failure' || name === 'DualWriteV1Failure') this.stats.v2Failures += value;
      },
    });
  }

  async start(): Promise<void> {
    await this.router.start();
    this.devices = (
      await this.v1.query<{ id: string }>('SELECT id FROM devices ORDER BY id LIMIT 200')
    ).rows.map((r) => r.id);
    const everyMs = 50;
    const perTick = Math.max(1, Math.round((this.options.perSecond * everyMs) / 1000));
    this.timer = setInterval(() => {
      for (let i = 0; i < perTick && this.inFlight.size < 50; i++) {
        const p = this.operation().finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      }
    }, everyMs);
  }

  private async operation(): Promise<void> {
    const n = this.tick++;
    const device = this.devices[n % this.devices.length];
    this.stats.operations++;
    try {
      if (n % 3 === 0) {
        this.stats.writes++;
        const started = performance.now();
        const operation = await this.write(n, device);
        this.writeLatenciesMs.push(performance.now() - started);
        this.stats.writesByOperation[operation] = (this.stats.writesByOperation[operation] ?? 0) + 1;
      } else {
        this.stats.reads++;
        if (this.router.route(device) === 'v2') {
          this.stats.readsFromV2++;
          await this.v2.query(
            `SELECT * FROM "${this.options.v2Schema}".devices WHERE id = $1 AND tenant_id = $2`,
            [device, this.options.tenantId],
          );
        } else {
          await this.db.device.findUnique({ where: { id: device } });
        }
      }
    } catch (error) {
      this.stats.errors++;
      if (this.stats.firstErrors.length < 5) this.stats.firstErrors.push((error as Error).message);
    }
  }

  /** One write of the mix: V2 first through the writer after the write switch, else Prisma. */
  private async write(n: number, device: string): Promise<string> {
    if (this.router.writePrimary() === 'v2') return this.writeV2First(n, device);
    try {
      return await this.writeWithPrisma(n, device);
    } catch (error) {
      // The switch moved between the backend's look and the write: nothing was written.
      if (error instanceof PrismaWriteAfterWriteSwitchError) return this.writeV2First(n, device);
      throw error;
    }
  }

  /** A write of the V2-first mix through `$migration.writer`; returns its name. */
  private async writeV2First(n: number, device: string): Promise<string> {
    const writer = this.db.$migration.writer;
    const now = new Date();
    this.stats.writesV2First++;
    switch ((n / 3) % 4) {
      case 0:
        await writer.update('devices', device, { lastSeenAt: now, status: 'ONLINE' });
        return 'writer.devices.update';
      case 2: {
        const id = `rehearsal_v2_alert_${n}`;
        await writer.insert('alerts', { id, deviceId: device, severity: 'LOW', message: `load ${n}` });
        this.insertedV2First.alerts.push(id);
        this.lastV2Alert = id;
        return 'writer.alerts.insert';
      }
      case 3:
        if (this.lastV2Alert) {
          await writer.update('alerts', this.lastV2Alert, { message: `updated by ${n}` });
          return 'writer.alerts.update';
        }
        return this.insertTelemetryV2First(n, device);
      default:
        return this.insertTelemetryV2First(n, device);
    }
  }

  private async insertTelemetryV2First(n: number, device: string): Promise<string> {
    const row = await this.db.$migration.writer.insert('telemetry', {
      deviceId: device,
      timestamp: new Date(),
      data: { load: n },
      protocol: 'MQTT',
      source: 'rehearsal',
    });
    this.insertedV2First.device_data.push(String(row.id));
    return 'writer.telemetry.insert';
  }

  /** One write of the mix, through the extended Prisma client; returns its name. */
  private async writeWithPrisma(n: number, device: string): Promise<string> {
    const db = this.db;
    const now = new Date();
    switch ((n / 3) % 12) {
      case 0:
        await db.device.update({ where: { id: device }, data: { lastSeenAt: now, status: 'ONLINE' } });
        return 'device.update';
      case 3:
        await db.deviceData.createMany({
          data: [0, 1, 2].map((i) => ({
            deviceId: device,
            timestamp: new Date(now.getTime() + i),
            data: { load: n, i },
            protocol: 'MQTT',
            source: 'rehearsal',
          })),
        });
        return 'deviceData.createMany';
      case 5:
        await db.alert.create({
          data: { id: `rehearsal_alert_${n}`, deviceId: device, severity: 'LOW', message: `load ${n}` },
        });
        return 'alert.create';
      case 7:
        await db.alert.updateMany({
          where: { deviceId: device, status: 'OPEN', id: { startsWith: 'rehearsal_alert_' } },
          data: { status: 'ACKNOWLEDGED' },
        });
        return 'alert.updateMany';
      case 9:
        // A device's heartbeat and its reading, atomically: reaches V2 after the commit.
        // Waits for a connection as long as a backend would on a busy host (Prisma's default,
        // 2 s, fails the caller while the backfill and the rehearsal share the machine's cores).
        await db.$transaction(
          async (tx) => {
            await tx.device.update({ where: { id: device }, data: { lastSeenAt: now } });
            await tx.deviceData.create({
              data: { deviceId: device, timestamp: now, data: { load: n }, protocol: 'HTTP' },
            });
          },
          { maxWait: 15_000, timeout: 30_000 },
        );
        return '$transaction';
      case 10:
        await db.device.update({
          where: { id: device },
          data: {
            status: 'ALERTING',
            alerts: { create: { id: `rehearsal_nested_${n}`, severity: 'HIGH', message: 'nested' } },
          },
        });
        return 'device.update (nested create)';
      case 11:
        await db.alert.deleteMany({ where: { deviceId: device, status: 'ACKNOWLEDGED' } });
        return 'alert.deleteMany';
      default:
        await db.deviceData.create({
          data: {
            deviceId: device,
            timestamp: now,
            data: { load: n },
            protocol: 'MQTT',
            source: 'rehearsal',
          },
        });
        return 'deviceData.create';
    }
  }

  /**
   * Resolves once `count` writes were made V2 first (or after `maxMs`, when the backend cannot
   * write that many: the run goes on, and the report shows how many it made).
   */
  async whenWrittenV2First(count: number, maxMs = 120_000): Promise<void> {
    const until = Date.now() + maxMs;
    while (this.stats.writesV2First < count && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * Stops sending, waits for operations in flight and for the repair queue to drain, then
   * counts the rows inserted V2 first that V1 does not hold.
   */
  async stop(): Promise<LoadStats> {
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.inFlight]);
    await this.options.repairs.whenIdle();
    await this.options.repairs.stop();
    this.router.stop();
    await this.prisma.$disconnect();
    const { device_data: telemetry, alerts } = this.insertedV2First;
    this.stats.rowsInsertedV2First = telemetry.length + alerts.length;
    const inV1 = await this.v1.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM "${this.options.v1Schema}".device_data WHERE id = ANY($1::bigint[]))::int
            + (SELECT count(*) FROM "${this.options.v1Schema}".alerts WHERE id = ANY($2::text[]))::int AS n`,
      [telemetry, alerts],
    );
    this.stats.rowsMissingInV1 = this.stats.rowsInsertedV2First - inV1.rows[0].n;
    return this.stats;
  }
}
