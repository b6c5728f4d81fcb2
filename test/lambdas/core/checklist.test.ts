import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { migrationStatus } from '../../../lambdas/core/checklist';
import {
  auditEvent,
  ensureControlSchema,
  setParameter,
  type MigrationContext,
} from '../../../lambdas/core/migration-state';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { freshDatabases, type TestDatabases } from '../../support/pg';

describe('checklist: V2 schema deployed', () => {
  let dbs: TestDatabases;
  let ctx: MigrationContext;
  beforeAll(async () => {
    dbs = await freshDatabases('checklist');
    await seedV1(dbs.v1, { devices: 5, telemetry: 100 });
    ctx = {
      v1: dbs.v1,
      v2: dbs.v2,
      config: testConfig(dbs, { telemetryStorage: 'partitioned' }),
      parameters: new MemoryParameters(),
      actor: 'test',
    };
  });
  afterAll(() => dbs.drop());

  const item = async (name: string) => (await migrationStatus(ctx)).checklist.find((c) => c.item === name)!;

  it('is not ticked when only the control schema’s migrations ran (V2 has no tables)', async () => {
    await ensureControlSchema(ctx);

    const deployed = await item('V2 schema deployed');

    expect(deployed.done).toBe(false);
    expect(deployed.evidence).toMatchObject({
      migrationFiles: 0,
      missingTables: ['tenants', 'users', 'devices', 'telemetry', 'alerts'],
    });
  });

  it('is ticked once Phase 1 has created every V2 table', async () => {
    await prepared(dbs, ctx.config);

    const deployed = await item('V2 schema deployed');

    expect(deployed.done).toBe(true);
    expect(deployed.evidence.missingTables).toBeUndefined();
    expect(deployed.evidence.migrationFiles).toBeGreaterThan(0);
  });

  it('is not ticked when a V2 table is missing', async () => {
    await dbs.v2.query('ALTER TABLE alerts RENAME TO alerts_elsewhere');
    try {
      const deployed = await item('V2 schema deployed');

      expect(deployed.done).toBe(false);
      expect(deployed.evidence.missingTables).toEqual(['alerts']);
    } finally {
      await dbs.v2.query('ALTER TABLE alerts_elsewhere RENAME TO alerts');
    }
  });
});

describe('checklist: rollout schedule set, performance checked', () => {
  let dbs: TestDatabases;
  let ctx: MigrationContext;
  beforeAll(async () => {
    dbs = await freshDatabases('checklist_perf');
    ctx = {
      v1: dbs.v1,
      v2: dbs.v2,
      config: testConfig(dbs, {
        cutover: {
          schedule: [
            { percentage: 20, bakeSeconds: 60 },
            { percentage: 100, bakeSeconds: 60 },
          ],
        },
      }),
      parameters: new MemoryParameters(),
      actor: 'test',
    };
    await ensureControlSchema(ctx);
  });
  afterAll(() => dbs.drop());

  const item = async (name: string) => (await migrationStatus(ctx)).checklist.find((c) => c.item === name)!;

  it('rollout schedule set: not while the schedule is only configured, ticked once Phase 4 recorded it', async () => {
    const planned = await item('rollout schedule set');
    expect(planned.done).toBe(false);
    expect(planned.evidence).toMatchObject({ schedule: ctx.config.cutover.schedule });

    await dbs.v2.query(
      `INSERT INTO migration_control.cutover_state (id, schedule, status) VALUES (1, $1, 'running')`,
      [JSON.stringify(ctx.config.cutover.schedule)],
    );
    await auditEvent(ctx, 'cutover.started', { schedule: ctx.config.cutover.schedule });
    const set = await item('rollout schedule set');
    expect(set.done).toBe(true);
    expect(set.at).toEqual(expect.any(String));
    expect(set.evidence).toMatchObject({ schedule: ctx.config.cutover.schedule, source: 'cutover_state' });
  });

  it('performance checked: needs the backfill rate and a healthy gate while V2 served traffic', async () => {
    await dbs.v2.query(
      `INSERT INTO migration_control.phase_runs (phase, status, actor, finished_at, result)
       VALUES ('BACKFILL', 'done', 'test', now(), '{"rows": 5000, "rowsPerSecond": 2500, "seconds": 2}')`,
    );
    // A healthy gate at 0 % checks nothing of V2 under load.
    await setParameter(ctx, 'trafficPercentage', '0', 'test');
    await auditEvent(ctx, 'gate.checked', { healthy: true, alarms: [] });
    expect((await item('performance checked')).done).toBe(false);

    // An unhealthy gate at 20 %: not checked either.
    await setParameter(ctx, 'trafficPercentage', '20', 'test');
    await auditEvent(ctx, 'gate.checked', { healthy: false, reason: 'alarm:BackendLatency' });
    expect((await item('performance checked')).done).toBe(false);

    await auditEvent(ctx, 'gate.checked', { healthy: true, alarms: [] });
    const checked = await item('performance checked');
    expect(checked.done).toBe(true);
    expect(checked.evidence).toMatchObject({ rowsPerSecond: 2500, healthyGate: { percentage: 20 } });
  });
});
