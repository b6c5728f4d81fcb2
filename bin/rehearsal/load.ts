import type { Pool } from 'pg';
import { DualWriter } from '../../client/dual-writer';
import { repairBatchHandler } from '../../lambdas/core/sync/repair';
import { TrafficRouter } from '../../client/traffic-router';
import { LocalQueue } from '../../lambdas/adapters/local/local-queue';
import type { ParameterPort } from '../../lambdas/ports/parameters';

export interface LoadStats {
  operations: number;
  reads: number;
  writes: number;
  readsFromV2: number;
  /** Errors the backend's callers saw (a V2 failure is not one: it goes to repair). */
  errors: number;
  v2Failures: number;
  repaired: number;
  firstErrors: string[];
}

/**
 * A synthetic IoT backend for the rehearsal: at about `perSecond` operations a second it reads
 * devices through the TrafficRouter (V1 or V2 by key) and writes through the DualWriter
 * (telemetry inserts, device updates), with a repair worker behind it, exactly as a real
 * backend wired like client/README.md would.
 */
export class SyntheticBackend {
  readonly stats: LoadStats = {
    operations: 0,
    reads: 0,
    writes: 0,
    readsFromV2: 0,
    errors: 0,
    v2Failures: 0,
    repaired: 0,
    firstErrors: [],
  };
  private readonly router: TrafficRouter;
  private readonly writer: DualWriter;
  private readonly repairs: LocalQueue;
  private timer?: NodeJS.Timeout;
  private inFlight = new Set<Promise<void>>();
  private devices: string[] = [];
  private tick = 0;

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
    this.writer = new DualWriter({
      v1,
      v2,
      router: this.router,
      repairQueue: this.repairs,
      ...settings,
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
        if (n % 9 === 0) {
          await this.writer.update('devices', device, {
            lastSeenAt: new Date(),
            status: 'ONLINE',
            updatedAt: new Date(),
          });
        } else {
          await this.writer.insert('telemetry', {
            deviceId: device,
            timestamp: new Date(),
            data: { load: n },
            protocol: 'MQTT',
            source: 'rehearsal',
          });
        }
      } else {
        this.stats.reads++;
        if (this.router.route(device) === 'v2') {
          this.stats.readsFromV2++;
          await this.v2.query(
            `SELECT * FROM "${this.options.v2Schema}".devices WHERE id = $1 AND tenant_id = $2`,
            [device, this.options.tenantId],
          );
        } else {
          await this.v1.query(`SELECT * FROM "${this.options.v1Schema}".devices WHERE id = $1`, [device]);
        }
      }
    } catch (error) {
      this.stats.errors++;
      if (this.stats.firstErrors.length < 5) this.stats.firstErrors.push((error as Error).message);
    }
  }

  /** Stops sending, waits for operations in flight and for the repair queue to drain. */
  async stop(): Promise<LoadStats> {
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.inFlight]);
    await this.repairs.whenIdle();
    await this.repairs.stop();
    this.router.stop();
    return this.stats;
  }
}
