import { PrismaPg } from '@prisma/adapter-pg';
import type { Pool } from 'pg';
import { withMigration } from '../../client/prisma';
import { repairBatchHandler } from '../../lambdas/core/sync/repair';
import { TrafficRouter } from '../../client/traffic-router';
import { LocalQueue } from '../../lambdas/adapters/local/local-queue';
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
}

/**
 * A synthetic IoT backend for the rehearsal: at about `perSecond` operations a second it reads
 * devices through the TrafficRouter (V1 or V2 by key) and writes with Prisma through
 * `withMigration` (telemetry inserts one by one and in batches, device updates, alerts created,
 * acknowledged and deleted, nested writes, interactive transactions), with a repair worker
 * behind it, exactly as a real Prisma backend wired like client/README.md would.
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
  };
  private readonly router: TrafficRouter;
  private readonly prisma: PrismaClient;
  private readonly db: ReturnType<typeof withMigration<PrismaClient>>;
  private readonly repairs: LocalQueue;
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
    },
  ) {
    this.router = TrafficRouter.fromParameters(parameters, { prefix: options.prefix, refreshMs: 500 });
    this.repairs = new LocalQueue({
      visibilityTimeoutMs: 30_000,
      maxReceiveCount: 10,
      concurrency: 1,
      retryDelayMs: 500,
    });
    const settings = { tenantId: options.tenantId, schemas: { v1: options.v1Schema, v2: options.v2Schema } };
    this.repairs.start(
      repairBatchHandler({ v1, v2, ...settings }, { onRepaired: () => this.stats.repaired++ }),
    );
    this.prisma = new PrismaClient({ adapter: new PrismaPg(v1, { schema: options.v1Schema }) });
    this.db = withMigration(this.prisma, {
      v1,
      v2,
      router: this.router,
      repairQueue: this.repairs,
      ...settings,
      shadowReads: false,
      onMetric: (name, value) => {
        if (name === 'DualWriteV2Failure') this.stats.v2Failures += value;
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

  /** One write of the mix, through the extended Prisma client; returns its name. */
  private async write(n: number, device: string): Promise<string> {
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
        await db.$transaction(async (tx) => {
          await tx.device.update({ where: { id: device }, data: { lastSeenAt: now } });
          await tx.deviceData.create({
            data: { deviceId: device, timestamp: now, data: { load: n }, protocol: 'HTTP' },
          });
        });
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

  /** Stops sending, waits for operations in flight and for the repair queue to drain. */
  async stop(): Promise<LoadStats> {
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.inFlight]);
    await this.repairs.whenIdle();
    await this.repairs.stop();
    this.router.stop();
    await this.prisma.$disconnect();
    return this.stats;
  }
}
