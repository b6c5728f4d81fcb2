import { RENAME_CONFIRMATION } from '../../lambdas/core/cleanup';
import type { Pool } from 'pg';
import { DualWriter, TrafficRouter, type DualWriteFailure } from '../../client';
import { LocalStateMachines } from '../../lambdas/adapters/local/local-state-machines';
import {
  localRepairQueue,
  startLocalWorkers,
  type LocalWorkers,
} from '../../lambdas/adapters/local/local-workers';
import { MemoryParameters } from '../../lambdas/adapters/local/memory-parameters';
import { migrationStatus } from '../../lambdas/core/checklist';
import type { OrchestratorDeps } from '../../lambdas/core/orchestrator';
import { repairBatchHandler, repairRow } from '../../lambdas/core/sync/repair';
import { parameterNames } from '../../lambdas/ports/parameters';
import { synthesizeDefinitions, type StateMachineDefinitions } from '../../lib/local-definitions';
import { quickCutover, seedV1, testConfig } from '../support/fixtures';
import { expectAllInSync } from '../support/in-sync';
import { localOrchestratorDeps } from '../support/migration';
import { freshDatabases } from '../support/pg';

/**
 * The write switch and the rollback from it, run by the synthesized Cutover and Rollback state
 * machines against the real handlers and databases, with a backend writing through the
 * DualWriter (its router reading the same parameters) the whole time.
 */
let definitions: StateMachineDefinitions;
beforeAll(() => {
  definitions = synthesizeDefinitions();
});

const names = parameterNames('/iot-migration');

/** The Rollback state machine's path: where it begins, and where it ends with the reads back on V1. */
const ROLLBACK_START = ['Validate input', 'Writes on V2?', 'Writes switched to V2?'];
const ROLLBACK_READS = ['Traffic to 0 %, dual-write stays on', 'Traffic rolled back'];
/** One more look at the repair queue while the rollback waits for it to drain. */
const DRAIN_AGAIN = ['Wait for the repair queue', 'Drain the repair queue', 'Repair queue drained?'];
const fastWaits = { waits: { '*': 20 }, retryMs: 10 };

async function environment() {
  const dbs = await freshDatabases('wsw');
  await seedV1(dbs.v1, { devices: 8, telemetry: 1500, seed: 12 });
  const config = testConfig(dbs, {
    batch: { telemetryWindowRows: 500, entityWindowRows: 4, concurrency: 2, maxReceiveCount: 3 },
    cutover: quickCutover([50, 100]),
  });
  const parameters = new MemoryParameters({
    [names.trafficPercentage]: '0',
    [names.dualWrite]: 'off',
    [names.writePrimary]: 'v1',
  });
  const workers: LocalWorkers = startLocalWorkers({ v1: dbs.v1, v2: dbs.v2, config });
  // The backend's repair queue: its worker is started by the tests, when they want it to run.
  const repairs = localRepairQueue({ maxReceiveCount: 5, retryDelayMs: 50 });
  const deps: OrchestratorDeps = {
    ...localOrchestratorDeps(dbs, config, parameters, workers.queue),
    repairQueue: repairs,
  };
  const router = TrafficRouter.fromParameters(parameters, { prefix: '/iot-migration', refreshMs: 60_000 });
  const failures: DualWriteFailure[] = [];
  const writer = (v1: Pool = dbs.v1) =>
    new DualWriter({
      v1,
      v2: dbs.v2,
      router,
      repairQueue: repairs,
      tenantId: config.tenant.id,
      onV1Failure: (f) => void failures.push(f),
      onV2Failure: (f) => void failures.push(f),
    });
  const machines = (options = {}) => new LocalStateMachines(definitions, deps, { ...fastWaits, ...options });
  const close = async () => {
    router.stop();
    await repairs.stop();
    await workers.stop();
    await dbs.drop();
  };
  return { dbs, config, parameters, repairs, deps, router, failures, writer, machines, close };
}

describe('the write switch and the rollback from it, through the state machines', () => {
  let env: Awaited<ReturnType<typeof environment>>;
  beforeAll(async () => {
    env = await environment();
  });
  afterAll(() => env.close());

  it('refuses the write switch before the cutover is complete, changing nothing', async () => {
    expect((await env.machines().run('migration', { action: 'advance', through: 'VERIFY' })).status).toBe(
      'SUCCEEDED',
    );
    const run = await env.machines().run('cutover', { action: 'switch-writes' });
    expect(run).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(run.cause).toMatch(/reads are at 0 % on V2, not 100 %/);
    expect(run.cause).toMatch(/the cutover is idle, not complete/);
    expect(run.path).toContain('Write switch: verify touched windows, V2 the write primary');
    expect(env.parameters.entries()[names.writePrimary]).toBe('v1');
    const lock = await env.dbs.v2.query('SELECT holder FROM migration_control.migration_lock');
    expect(lock.rows[0].holder).toBeNull();
  });

  it('refuses cleanup while the writes are not switched', async () => {
    expect((await env.machines().run('cutover', { action: 'run' })).status).toBe('SUCCEEDED');
    const run = await env.machines().run('migration', { action: 'advance', confirm: RENAME_CONFIRMATION });
    expect(run).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(run.cause).toMatch(/writes are not switched to V2/);
    expect((await env.dbs.v1.query(`SELECT to_regclass('public.users') AS t`)).rows[0].t).toBe('users');
  });

  it('refuses the write switch while a touched window differs, then switches once it is clean', async () => {
    // A V1 write that never reached V2 (dual-write was on, its V2 half lost): drift.
    const [user] = (await env.dbs.v1.query(`SELECT id FROM users ORDER BY id LIMIT 1`)).rows;
    await env.dbs.v1.query(
      `UPDATE users SET name = 'lost on its way to V2', "updatedAt" = now() WHERE id = $1`,
      [user.id],
    );
    const refused = await env.machines().run('cutover', { action: 'switch-writes' });
    expect(refused).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(refused.cause).toMatch(/found 1 mismatched window/);
    expect(env.parameters.entries()[names.writePrimary]).toBe('v1');

    // The repair worker brings the lost write to V2.
    await repairRow({ v1: env.dbs.v1, v2: env.dbs.v2, tenantId: env.config.tenant.id }, 'users', user.id);
    const run = await env.machines().run('cutover', { action: 'switch-writes' });
    expect([run.status, run.cause]).toEqual(['SUCCEEDED', undefined]);
    expect(run.output).toMatchObject({ changed: true, primary: 'v2', verification: { clean: true } });
    expect(env.parameters.entries()[names.writePrimary]).toBe('v2');
    const status = await migrationStatus({ ...env.deps, actor: 'test' });
    expect(status.writePrimary).toBe('v2');
    expect(status.checklist.find((c) => c.item === 'writes switched to V2 (V1 mirrored)')?.done).toBe(true);
    // Again: nothing changes.
    expect((await env.machines().run('cutover', { action: 'switch-writes' })).output).toMatchObject({
      changed: false,
    });
  });

  it('stops the rollback on rows V1 cannot take (another tenant), listing them', async () => {
    await env.dbs.v2.query(
      `INSERT INTO tenants (id, name, slug, plan, status) VALUES ('acme', 'Acme', 'acme', 'FREE', 'ACTIVE')`,
    );
    await env.dbs.v2.query(
      `INSERT INTO users (id, tenant_id, email, password_hash, updated_at) VALUES ('acme_admin', 'acme', 'a@acme.test', 'h', now())`,
    );
    const refused = await env.machines().run('rollback', { reason: 'test: other tenant' });
    expect(refused).toMatchObject({ status: 'FAILED', error: 'UnmirrorableRowsError' });
    expect(refused.cause).toMatch(/users acme_admin \(tenant acme\)/);
    expect(refused.path).toEqual(
      expect.arrayContaining([
        'Writes on V2?',
        'Drain the repair queue',
        'Check touched windows, repair V1 from V2',
      ]),
    );
    expect(env.parameters.entries()[names.writePrimary]).toBe('v2');
    expect(env.parameters.entries()[names.trafficPercentage]).toBe('100');
    await env.dbs.v2.query(`DELETE FROM users WHERE tenant_id = 'acme'`);
    await env.dbs.v2.query(`DELETE FROM tenants WHERE id = 'acme'`);
  });

  it('rolls the writes back to V1 first, losing no row written while V2 was primary', async () => {
    await env.router.refresh();
    expect(env.router.writePrimary()).toBe('v2');
    const writer = env.writer();
    const device = (await env.dbs.v1.query(`SELECT id FROM devices ORDER BY id LIMIT 1`)).rows[0]
      .id as string;
    const written: string[] = [];
    for (let i = 0; i < 20; i++) {
      const row = await writer.insert('telemetry', {
        deviceId: device,
        timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
        data: { i },
        protocol: 'MQTT',
      });
      written.push(row.id);
    }
    await writer.insert('alerts', {
      id: 'ws_alert',
      deviceId: device,
      severity: 'HIGH',
      message: 'V2 first',
    });
    await writer.update('devices', device, { status: 'ON-V2' });
    // One mirror fails (V1 unreachable for that write): it waits in the repair queue.
    const down = {
      query: () => Promise.reject(new Error('connect ECONNREFUSED')),
      on: () => down,
    } as unknown as Pool;
    await env.writer(down).update('alerts', 'ws_alert', { message: 'mirror failed, repaired from V2' });
    expect(env.failures.map((f) => [f.table, f.target, f.repairQueued])).toEqual([['alerts', 'v1', true]]);
    expect((await env.repairs.depth()).waiting).toBe(1);

    let drains = 0;
    const run = await env
      .machines({
        wrapTask: async (event: Record<string, unknown>, task: () => Promise<Record<string, unknown>>) => {
          // The repair worker comes up while the rollback waits for it.
          if (event.task === 'drain-repair-queue' && ++drains === 3)
            env.repairs.start(
              repairBatchHandler({ v1: env.dbs.v1, v2: env.dbs.v2, tenantId: env.config.tenant.id }),
            );
          if (event.task === 'drain-repair-queue' && drains >= 3) await env.repairs.whenIdle();
          return task();
        },
      })
      .run('rollback', { reason: 'test: rollback from the write switch', actor: 'ops' });
    expect(run.status).toBe('SUCCEEDED');
    // The repair worker comes up at the third look: the queue drains then.
    expect(run.path).toEqual([
      ...ROLLBACK_START,
      'Start draining the repair queue',
      'Drain the repair queue',
      'Repair queue drained?',
      ...DRAIN_AGAIN,
      ...DRAIN_AGAIN,
      'Check touched windows, repair V1 from V2',
      'Writes back to V1 first',
      ...ROLLBACK_READS,
    ]);
    expect(env.parameters.entries()).toMatchObject({
      [names.writePrimary]: 'v1',
      [names.trafficPercentage]: '0',
      [names.dualWrite]: 'on',
    });
    // Every row written while V2 was primary is in V1, and V1 equals V2 everywhere.
    const inV1 = await env.dbs.v1.query(
      `SELECT id::text AS id FROM device_data WHERE id = ANY($1::bigint[])`,
      [written],
    );
    expect(inV1.rows).toHaveLength(written.length);
    expect((await env.dbs.v1.query(`SELECT message FROM alerts WHERE id = 'ws_alert'`)).rows).toEqual([
      { message: 'mirror failed, repaired from V2' },
    ]);
    await expectAllInSync(env.dbs, env.config);
    const audit = await env.dbs.v2.query(
      `SELECT actor, action, details->>'requestedBy' AS "requestedBy" FROM migration_control.audit_log WHERE action IN ('writes.switched-back', 'rollback.done', 'rollback.writes-checked') ORDER BY id`,
    );
    // The actor is the acting Rollback execution; who asked is recorded beside it.
    const execution = expect.stringMatching(/^arn:aws:states:local-1:000000000000:execution:rollback:/);
    expect(audit.rows).toEqual([
      { actor: execution, action: 'rollback.writes-checked', requestedBy: null },
      { actor: execution, action: 'writes.switched-back', requestedBy: null },
      { actor: execution, action: 'rollback.done', requestedBy: 'ops' },
    ]);
    expect(new Set(audit.rows.map((r) => r.actor)).size).toBe(1);
  });

  it('goes straight to the reads when the writes were never switched', async () => {
    const run = await env.machines().run('rollback', { reason: 'again' });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.path).toEqual([...ROLLBACK_START, ...ROLLBACK_READS]);
  });

  /** Cutover to 100 % again (after a rollback), then the write switch. */
  async function switchAgain() {
    await env.dbs.v2.query(
      `UPDATE migration_control.verification_runs SET finished_at = now() WHERE status = 'passed' AND scope = 'full'`,
    );
    expect((await env.machines().run('cutover', { action: 'run' })).status).toBe('SUCCEEDED');
    const run = await env.machines().run('cutover', { action: 'switch-writes' });
    expect([run.status, run.cause]).toEqual(['SUCCEEDED', undefined]);
  }

  it('loses no row when the writes roll back while the backend keeps writing', async () => {
    await switchAgain();
    const router = TrafficRouter.fromParameters(env.parameters, { prefix: '/iot-migration', refreshMs: 50 });
    await router.start();
    // The repair worker runs the whole time (restarted: an earlier test may have started it).
    await env.repairs.stop();
    env.repairs.start(repairBatchHandler({ v1: env.dbs.v1, v2: env.dbs.v2, tenantId: env.config.tenant.id }));
    const writer = new DualWriter({
      v1: env.dbs.v1,
      v2: env.dbs.v2,
      router,
      repairQueue: env.repairs,
      tenantId: env.config.tenant.id,
    });
    const devices = (await env.dbs.v1.query(`SELECT id FROM devices ORDER BY id`)).rows.map(
      (r) => r.id as string,
    );
    const inserted: string[] = [];
    const alerts: string[] = [];
    const primaries = new Set<string>();
    let stop = false;
    let errors = 0;
    const backend = (async () => {
      for (let n = 0; !stop; n++) {
        const device = devices[n % devices.length];
        primaries.add(router.writePrimary());
        try {
          const row = await writer.insert('telemetry', {
            deviceId: device,
            timestamp: new Date(Date.UTC(2026, 1, 1) + n * 1000),
            data: { n },
            protocol: 'HTTP',
          });
          inserted.push(row.id);
          if (n % 3 === 0)
            await writer.update('devices', device, { lastSeenAt: new Date(), status: `load-${n}` });
          if (n % 4 === 0) {
            await writer.insert('alerts', {
              id: `load_${n}`,
              deviceId: device,
              severity: 'LOW',
              message: `${n}`,
            });
            alerts.push(`load_${n}`);
          }
          if (n % 8 === 4) await writer.delete('alerts', `load_${n - 4}`);
        } catch {
          errors++;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      while (inserted.length < 20) await new Promise((r) => setTimeout(r, 20));
      const run = await env
        .machines()
        .run('rollback', { reason: 'test: under load', actor: 'alarm:LoadTest' });
      expect([run.status, run.cause]).toEqual(['SUCCEEDED', undefined]);
      // The backend keeps writing a moment after the switch back (V1 first now).
      const after = inserted.length;
      while (inserted.length < after + 20) await new Promise((r) => setTimeout(r, 20));
    } finally {
      stop = true;
      await backend;
      router.stop();
    }
    await env.repairs.whenIdle();
    expect(errors).toBe(0);
    expect([...primaries].sort()).toEqual(['v1', 'v2']);
    const inV1 = await env.dbs.v1.query(
      `SELECT count(*)::int AS n FROM device_data WHERE id = ANY($1::bigint[])`,
      [inserted],
    );
    expect(inV1.rows[0].n).toBe(inserted.length);
    await expectAllInSync(env.dbs, env.config);
    expect(env.parameters.entries()[names.writePrimary]).toBe('v1');
  });

  it('rolls back past rows V1 cannot take when forced, leaving them in V2 only', async () => {
    await switchAgain();
    await env.dbs.v2.query(
      `INSERT INTO tenants (id, name, slug, plan, status) VALUES ('globex', 'Globex', 'globex', 'FREE', 'ACTIVE')`,
    );
    await env.dbs.v2.query(
      `INSERT INTO users (id, tenant_id, email, password_hash, updated_at) VALUES ('globex_admin', 'globex', 'g@globex.test', 'h', now())`,
    );
    const run = await env.machines().run('rollback', { reason: 'test: forced', force: true });
    expect([run.status, run.cause]).toEqual(['SUCCEEDED', undefined]);
    expect(env.parameters.entries()[names.writePrimary]).toBe('v1');
    expect((await env.dbs.v1.query(`SELECT 1 FROM users WHERE id = 'globex_admin'`)).rows).toEqual([]);
    const forced = await env.dbs.v2.query(
      `SELECT details FROM migration_control.audit_log WHERE action = 'rollback.unmirrorable-forced' ORDER BY id DESC LIMIT 1`,
    );
    expect(forced.rows[0].details).toMatchObject({
      unmirrorable: 1,
      rows: [{ table: 'users', key: 'globex_admin' }],
    });
  });
});
