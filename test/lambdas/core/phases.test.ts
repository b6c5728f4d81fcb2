import { runVerificationLocally } from '../../../lambdas/adapters/local/local-verify';
import { testBackup } from '../../support/migration';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { runBackfillPhase, runVerifyPhase } from '../../../lambdas/adapters/local/local-migration';
import { startLocalWorkers } from '../../../lambdas/adapters/local/local-workers';
import type { MigrationConfigInput } from '../../../lambdas/core/config';
import { migrationStatus } from '../../../lambdas/core/checklist';
import {
  archivedName,
  dropArchives,
  DROP_CONFIRMATION,
  RENAME_CONFIRMATION,
  runCleanupLocally,
} from '../../../lambdas/core/cleanup';
import { switchWrites } from '../../../lambdas/core/write-switch';
import { syncRow } from '../../../lambdas/core/sync/repair';
import type { QueueDepthPort } from '../../../lambdas/ports/queue';
import {
  cutoverStatus,
  rollback,
  ROLLBACK_CONFIRMATION,
  runCutoverLocally,
  startCutover,
} from '../../../lambdas/core/cutover';
import {
  GuardRefusedError,
  MigrationLockedError,
  PhaseOrderError,
  RollbackRefusedError,
  VerificationFailedError,
} from '../../../lambdas/core/errors';
import { acquireLock, releaseLock, type MigrationContext } from '../../../lambdas/core/migration-state';
import { prepareStep, startBackfill, startVerify } from '../../../lambdas/core/phases';
import { V1_TABLE_NAMES } from '../../../lambdas/core/v1-schema';
import type { AlarmPort, AlarmState } from '../../../lambdas/ports/alarms';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { rowCounts, seedV1, testConfig } from '../../support/fixtures';
import { describeEachStorage, PARTITIONS, type StorageCase } from '../../support/servers';

class TestAlarms implements AlarmPort {
  firingNow: AlarmState[] = [];
  async firing() {
    return this.firingNow;
  }
}

const fast = (overrides: Partial<MigrationConfigInput> = {}): Partial<MigrationConfigInput> => ({
  batch: { telemetryWindowRows: 1000, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
  cutover: {
    schedule: [
      { percentage: 10, bakeSeconds: 0 },
      { percentage: 25, bakeSeconds: 0 },
      { percentage: 50, bakeSeconds: 0 },
      { percentage: 100, bakeSeconds: 0 },
    ],
    soakMinutes: 0,
  },
  ...overrides,
});

async function setup(
  prefix: string,
  overrides: Partial<MigrationConfigInput> = {},
  storage: StorageCase = PARTITIONS,
) {
  const dbs = await freshDatabases(prefix, storage.server);
  await seedV1(dbs.v1, { devices: 12, telemetry: 3000, seed: 4 });
  const config = testConfig(dbs, fast(overrides));
  const alarms = new TestAlarms();
  const parameters = new MemoryParameters({
    '/iot-migration/v2-traffic-percentage': '0',
    '/iot-migration/dual-write': 'off',
  });
  const ctx: MigrationContext = {
    v1: dbs.v1,
    v2: dbs.v2,
    config,
    parameters,
    alarms,
    actor: 'person:test',
    backup: testBackup(dbs),
  };
  const workers = startLocalWorkers(ctx);
  return { dbs, ctx, alarms, parameters, workers };
}

/** What a refused action must leave as it was. */
async function snapshot(dbs: TestDatabases, parameters: MemoryParameters) {
  const runs = await dbs.v2
    .query('SELECT phase, status FROM migration_control.phase_runs ORDER BY id')
    .catch(() => ({ rows: [] }));
  return { parameters: parameters.entries(), runs: runs.rows, v1: await rowCounts(dbs.v1, 'public') };
}

describeEachStorage('the five phases', (storage) => {
  let s: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    s = await setup('phases', {}, storage);
  });
  afterAll(async () => {
    await s.workers.stop();
    await s.dbs.drop();
  });

  it('refuses to skip a phase, changing nothing', async () => {
    await expect(startBackfill({ ...s.ctx, queue: s.workers.queue })).rejects.toThrow();
    await prepareStep(s.ctx);
    // Phase 1 chose the storage this server offers (the real probe: TimescaleDB where installed).
    expect((await s.dbs.v2.query('SELECT kind FROM migration_control.telemetry_storage')).rows).toEqual([
      { kind: storage.storage },
    ]);
    const before = await snapshot(s.dbs, s.parameters);
    const error = await startVerify({ ...s.ctx, queue: s.workers.queue }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PhaseOrderError);
    expect((error as PhaseOrderError).missing).toEqual(['BACKFILL']);
    await expect(startCutover(s.ctx)).rejects.toThrow(PhaseOrderError);
    expect(await snapshot(s.dbs, s.parameters)).toEqual(before);
  });

  it('lets one run act at a time', async () => {
    await acquireLock({ ...s.ctx, actor: 'execution:first' });
    const error = await acquireLock({ ...s.ctx, actor: 'execution:second' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationLockedError);
    expect((error as MigrationLockedError).holder).toBe('execution:first');
    await acquireLock({ ...s.ctx, actor: 'execution:first' }); // re-entrant for the holder
    await releaseLock({ ...s.ctx, actor: 'execution:first' });
    await acquireLock({ ...s.ctx, actor: 'execution:second' });
    await releaseLock({ ...s.ctx, actor: 'execution:second' });
  });

  it('walks backfill, verification, cutover and cleanup in order; cleanup renames V1 keeping its rows', async () => {
    const progress = await runBackfillPhase(s.ctx, s.workers);
    expect(progress.complete).toBe(true);
    expect(s.parameters.entries()['/iot-migration/dual-write']).toBe('on');
    // The index dropped for the load is built before the phase ends, in that order.
    const steps = await s.dbs.v2.query<{ action: string; details: Record<string, unknown> }>(
      `SELECT action, details FROM migration_control.audit_log
        WHERE action IN ('backfill.planned', 'backfill.indexes-built')
           OR (action = 'phase.done' AND details->>'phase' = 'BACKFILL') ORDER BY id`,
    );
    expect(steps.rows.map((r) => r.action)).toEqual([
      'backfill.planned',
      'backfill.indexes-built',
      'phase.done',
    ]);
    expect(steps.rows[0].details.indexesDeferred).toContain('telemetry_tenant_device_ts');
    expect(steps.rows[1].details.indexes).toEqual([
      expect.objectContaining({ name: 'telemetry_tenant_device_ts' }),
      ...(storage.storage === 'timescaledb'
        ? [expect.objectContaining({ name: 'telemetry_timestamp_idx' })]
        : []),
    ]);
    const verified = await runVerifyPhase(s.ctx, s.workers);
    expect(verified.complete && verified.clean).toBe(true);
    const cut = await runCutoverLocally(s.ctx);
    expect(cut.outcome).toBe('complete');
    expect(s.parameters.entries()['/iot-migration/v2-traffic-percentage']).toBe('100');
    const levels = await s.dbs.v2.query(
      `SELECT details->>'to' AS to FROM migration_control.audit_log WHERE action = 'parameter.set' AND details->>'name' LIKE '%traffic%' ORDER BY id`,
    );
    expect(levels.rows.map((r) => r.to)).toEqual(['10', '25', '50', '100']);

    // Cleanup ends the reverse mirror: refused until the writes are switched to V2.
    const refused = await runCleanupLocally(s.ctx, { pollMs: 10, confirm: RENAME_CONFIRMATION }).catch(
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(GuardRefusedError);
    expect((refused as GuardRefusedError).reasons.join()).toMatch(/writes are not switched to V2/);
    expect(s.parameters.entries()['/iot-migration/dual-write']).toBe('on');
    // A backend write whose V2 half failed waits in the repair queue: the switch's verification
    // sees the row behind, and checks once more after the queue has emptied.
    const behind = await s.dbs.v1.query<{ id: string }>(
      `UPDATE users SET name = 'behind, repair queued', "updatedAt" = now() WHERE id = (SELECT min(id) FROM users) RETURNING id`,
    );
    let depthCalls = 0;
    const repairQueue: QueueDepthPort = {
      depth: async () => {
        depthCalls += 1;
        if (depthCalls === 1) return { waiting: 1, inFlight: 0 };
        await syncRow(
          { v1: s.dbs.v1, v2: s.dbs.v2, tenantId: s.ctx.config.tenant.id },
          'users',
          behind.rows[0].id,
        );
        return { waiting: 0, inFlight: 0 };
      },
    };
    expect(await switchWrites({ ...s.ctx, repairQueue }, { repairWaitMs: 30_000 })).toMatchObject({
      changed: true,
      primary: 'v2',
    });
    expect(depthCalls).toBe(2);
    const rechecked = await s.dbs.v2.query(
      `SELECT details->'windows' AS windows FROM migration_control.audit_log WHERE action = 'writes.switch-rechecked'`,
    );
    expect(rechecked.rows).toEqual([{ windows: [expect.stringMatching(/^users#\d+$/)] }]);

    const before = await rowCounts(s.dbs.v1, 'public');
    const cleaned = await runCleanupLocally(s.ctx, { pollMs: 10, confirm: RENAME_CONFIRMATION });
    expect(cleaned.renamed).toEqual(V1_TABLE_NAMES.map(archivedName));
    // Only now, with V1 archived, may TimescaleDB compress the history.
    expect(cleaned.compression).toBe(storage.storage === 'timescaledb' ? 'added' : 'not a hypertable');
    const after = await rowCounts(s.dbs.v1, 'public');
    expect(Object.keys(after).sort()).toEqual(V1_TABLE_NAMES.map(archivedName).sort());
    for (const table of V1_TABLE_NAMES) expect(after[archivedName(table)]).toBe(before[table]);
    expect(s.parameters.entries()['/iot-migration/dual-write']).toBe('off');

    const status = await migrationStatus(s.ctx);
    expect(status.phases.map((p) => p.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
    const item = (name: string) => status.checklist.find((c) => c.item === name)!;
    expect(item('backup created').done).toBe(true);
    expect(item('history migrated').evidence.rows).toBeGreaterThan(3000);
    expect(item('verification passed').done).toBe(true);
    expect(item('performance checked').done).toBe(true);
    expect(item('rollout schedule set').done).toBe(true);
    expect(item('alarms configured').done).toBe(true);
    expect(item('writes switched to V2 (V1 mirrored)').done).toBe(true);
  });

  it('refuses a rollback once V1 is archived, even forced and confirmed: V1 has no tables to read', async () => {
    const before = await snapshot(s.dbs, s.parameters);
    const error = await rollback(s.ctx, { reason: 'late regret' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RollbackRefusedError);
    expect((error as Error).message).toMatch(/renamed to <name>_v1_archived/);
    const forced = await rollback(s.ctx, {
      reason: 'forced by test',
      force: true,
      confirm: ROLLBACK_CONFIRMATION,
    }).catch((e: unknown) => e);
    expect(forced).toBeInstanceOf(RollbackRefusedError);
    expect(await snapshot(s.dbs, s.parameters)).toEqual(before);
    expect(s.parameters.entries()['/iot-migration/v2-traffic-percentage']).toBe('100');
  });

  it('refuses to drop the archives before the retention period, or without the confirmation', async () => {
    await expect(dropArchives(s.ctx, { confirm: DROP_CONFIRMATION })).rejects.toThrow(
      /retention period of 14 days/,
    );
    await expect(dropArchives(s.ctx, { confirm: 'yes' })).rejects.toThrow(GuardRefusedError);
    const tables = await rowCounts(s.dbs.v1, 'public');
    expect(Object.keys(tables)).toHaveLength(4);
    const retention0 = { ...s.ctx, config: { ...s.ctx.config, cleanup: { retentionDays: 0 } } };
    await expect(dropArchives(retention0, { confirm: 'yes' })).rejects.toThrow(/confirmation/);
    const rowDigest = async () =>
      (
        await s.dbs.v2.query(
          `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'telemetry' AND column_name = 'row_digest'`,
        )
      ).rows[0].n;
    expect(await rowDigest()).toBe(1);
    if (storage.storage === 'timescaledb') {
      // The history may be compressed by now (the policy is on since cleanup): the digest
      // column is dropped from compressed chunks too.
      const compressed = await s.dbs.v2.query(
        `SELECT count(compress_chunk(c, if_not_compressed => true))::int AS n FROM show_chunks('telemetry') c`,
      );
      expect(compressed.rows[0].n).toBeGreaterThan(0);
    }
    const v2Before = await rowCounts(s.dbs.v2, 'public');
    expect(await dropArchives(retention0, { confirm: DROP_CONFIRMATION })).toEqual([
      'users_v1_archived',
      'devices_v1_archived',
      'device_data_v1_archived',
      'alerts_v1_archived',
      '"public"."telemetry"."row_digest"',
    ]);
    expect(await rowCounts(s.dbs.v1, 'public')).toEqual({});
    // V2 keeps every row.
    expect(await rowCounts(s.dbs.v2, 'public')).toEqual(v2Before);
    // With V1 gone, V2 telemetry no longer carries the digest kept for verification.
    expect(await rowDigest()).toBe(0);
  });
});

describe('cutover guards and the health gate', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    s = await setup('cutover', {
      cutover: { ...fast().cutover!, soakMinutes: 60, maxVerificationAgeMinutes: 0.02 },
    });
    await prepareStep(s.ctx);
    await runBackfillPhase(s.ctx, s.workers);
  });
  afterAll(async () => {
    await s.workers.stop();
    await s.dbs.drop();
  });

  it('fails Phase 3 with a named error when a window cannot be repaired, naming it', async () => {
    const alert = (await s.dbs.v2.query('SELECT id FROM alerts ORDER BY id LIMIT 1')).rows[0].id;
    await s.dbs.v2.query(`UPDATE alerts SET status = 'tampered' WHERE id = $1`, [alert]);
    await s.dbs.v2.query(
      `CREATE FUNCTION block() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'blocked'; END $$`,
    );
    await s.dbs.v2.query(
      `CREATE TRIGGER no_repair BEFORE UPDATE OR DELETE ON alerts FOR EACH ROW EXECUTE FUNCTION block()`,
    );
    const error = await runVerifyPhase(s.ctx, s.workers).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VerificationFailedError);
    expect((error as VerificationFailedError).windows).toEqual([
      expect.objectContaining({ table: 'alerts' }),
    ]);
    const phase = await s.dbs.v2.query(
      `SELECT status, error FROM migration_control.phase_runs WHERE phase = 'VERIFY' ORDER BY id DESC LIMIT 1`,
    );
    expect(phase.rows[0].status).toBe('failed');
    expect(phase.rows[0].error).toMatch(/^VerificationFailedError/);
    await expect(startCutover(s.ctx)).rejects.toThrow(PhaseOrderError);
    await s.dbs.v2.query('DROP TRIGGER no_repair ON alerts');
  });

  it('refuses a cutover after a failed verification, then after a stale one', async () => {
    const ok = await runVerifyPhase(s.ctx, s.workers);
    expect(ok.complete && ok.clean).toBe(true);
    // Later, V2 is edited behind the migration's back and a new verification fails.
    const alert = (await s.dbs.v2.query('SELECT id, message FROM alerts ORDER BY id LIMIT 1')).rows[0];
    await s.dbs.v2.query(`UPDATE alerts SET message = 'tampered' WHERE id = $1`, [alert.id]);
    const failedRun = await runVerificationLocally(s.ctx, { repair: false });
    expect(failedRun.clean).toBe(false);
    const before = await snapshot(s.dbs, s.parameters);
    const failed = await startCutover(s.ctx).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(GuardRefusedError);
    expect((failed as GuardRefusedError).reasons.join()).toMatch(/latest verification \(run \d+\) failed/);
    expect(await snapshot(s.dbs, s.parameters)).toEqual(before);
    expect((await cutoverStatus(s.ctx)).status).toBe('idle');

    // Repaired and passing, then older than the allowed 1.2 s.
    expect((await runVerificationLocally(s.ctx)).clean).toBe(true);
    await new Promise((r) => setTimeout(r, 1500));
    const stale = await startCutover(s.ctx).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(GuardRefusedError);
    expect((stale as GuardRefusedError).reasons.join()).toMatch(/older than 0.02 minutes/);
    expect(await snapshot(s.dbs, s.parameters)).toEqual(before);
  });

  it('rolls back to 0 at the gate after 25 % when an alarm fires, and the audit log names the alarm', async () => {
    expect((await runVerificationLocally(s.ctx)).clean).toBe(true);
    let applied = 0;
    const result = await runCutoverLocally(s.ctx, {
      sleep: async () => {
        applied++;
        if (applied === 2)
          s.alarms.firingNow = [{ name: 'BackendErrorRate', state: 'ALARM', reason: 'errors > 5%' }];
      },
    });
    expect(result.outcome).toBe('rolled-back');
    expect(s.parameters.entries()['/iot-migration/v2-traffic-percentage']).toBe('0');
    expect(s.parameters.entries()['/iot-migration/dual-write']).toBe('on');
    const log = await s.dbs.v2.query(
      `SELECT actor, details FROM migration_control.audit_log WHERE action = 'rollback.done' ORDER BY id DESC LIMIT 1`,
    );
    expect(log.rows[0].actor).toBe('alarm:BackendErrorRate');
    expect(log.rows[0].details).toMatchObject({ from: 25, to: 0 });
    expect(log.rows[0].details.reason).toMatch(/25 %.*BackendErrorRate/);
    // Idempotent: a second rollback changes no parameter.
    expect((await rollback(s.ctx, { reason: 'again' })).changed).toBe(false);
  });

  it('refuses cleanup before traffic has soaked at 100 %', async () => {
    s.alarms.firingNow = [];
    expect((await runVerificationLocally(s.ctx)).clean).toBe(true);
    expect((await runCutoverLocally(s.ctx)).outcome).toBe('complete');
    const before = await snapshot(s.dbs, s.parameters);
    const error = await runCleanupLocally(s.ctx, { confirm: RENAME_CONFIRMATION }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GuardRefusedError);
    expect((error as GuardRefusedError).reasons.join()).toMatch(/soak time of 60 minutes has \d+ minute/);
    expect(await snapshot(s.dbs, s.parameters)).toEqual(before);
  });
});
