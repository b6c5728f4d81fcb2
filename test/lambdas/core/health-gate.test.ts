import { LocalAlarms } from '../../../lambdas/adapters/local/local-alarms';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { healthGate } from '../../../lambdas/core/cutover';
import type { MigrationContext } from '../../../lambdas/core/migration-state';
import { syncRow } from '../../../lambdas/core/sync/repair';
import type { QueueDepthPort } from '../../../lambdas/ports/queue';
import { preparedDatabases } from '../../support/migration';
import { suiteSetup } from '../../support/pg';

/**
 * The cutover's health gate on drift whose repair is still queued: a backend write whose V2
 * half failed leaves the row behind in V2 until the repair worker re-syncs it. The gate checks
 * once more after the repair queue has emptied; what still differs then is drift.
 */
describe('health gate: drift while the repair queue still holds failed V2 writes', () => {
  const suite = suiteSetup(async () => {
    const { dbs, config } = await preparedDatabases(
      'gate',
      { devices: 5, telemetry: 200, seed: 4 },
      { backfilled: true },
    );
    const ctx: MigrationContext = {
      v1: dbs.v1,
      v2: dbs.v2,
      config,
      parameters: new MemoryParameters({}),
      alarms: new LocalAlarms(),
      actor: 'arn:aws:states:local-1:000000000000:execution:cutover:gate',
    };
    return { dbs, ctx };
  });

  /** A backend write to V1 whose V2 half failed: the row is behind in V2. */
  async function writeWithFailedV2Half(name: string): Promise<string> {
    const { rows } = await suite.dbs.v1.query<{ id: string }>(
      `UPDATE users SET name = $1, "updatedAt" = now() WHERE id = (SELECT min(id) FROM users) RETURNING id`,
      [name],
    );
    return rows[0].id;
  }
  const repairDeps = () => ({ v1: suite.dbs.v1, v2: suite.dbs.v2, tenantId: suite.ctx.config.tenant.id });
  const audited = async (action: string) =>
    Number(
      (
        await suite.dbs.v2.query(`SELECT count(*) AS n FROM migration_control.audit_log WHERE action = $1`, [
          action,
        ])
      ).rows[0].n,
    );

  it('passes once the queued repair lands, and audits the second look', async () => {
    const id = await writeWithFailedV2Half('behind, repair queued');
    let calls = 0;
    const repairQueue: QueueDepthPort = {
      depth: async () => {
        calls += 1;
        if (calls === 1) return { waiting: 1, inFlight: 0 };
        // The repair worker takes the message and re-syncs the row from V1.
        await syncRow(repairDeps(), 'users', id);
        return { waiting: 0, inFlight: 0 };
      },
    };
    const gate = await healthGate({ ...suite.ctx, repairQueue }, { repairWaitMs: 30_000 });
    expect(gate).toEqual({ healthy: true, alarms: [], driftWindows: [], reason: null });
    expect(calls).toBe(2);
    expect(await audited('gate.drift-rechecked')).toBe(1);
  });

  it('with an empty repair queue, looks once more at once (a write in flight may have landed), and fails on drift still there', async () => {
    await writeWithFailedV2Half('behind, nothing queued');
    let calls = 0;
    const repairQueue: QueueDepthPort = {
      depth: () => {
        calls += 1;
        return Promise.resolve({ waiting: 0, inFlight: 0 });
      },
    };
    const gate = await healthGate({ ...suite.ctx, repairQueue }, { repairWaitMs: 30_000 });
    expect(gate.healthy).toBe(false);
    expect(gate.reason).toMatch(/^drift:users#\d+$/);
    expect(calls).toBe(1);
    expect(await audited('gate.drift-rechecked')).toBe(2);
  });

  it('passes when the second look finds the write landed, though the queue was empty all along', async () => {
    const id = await writeWithFailedV2Half('in flight, lands before the second look');
    const repairQueue: QueueDepthPort = {
      depth: async () => {
        // The V2 half was on its way at the first check; it lands now, never queued.
        await syncRow(repairDeps(), 'users', id);
        return { waiting: 0, inFlight: 0 };
      },
    };
    const gate = await healthGate({ ...suite.ctx, repairQueue }, { repairWaitMs: 30_000 });
    expect(gate).toEqual({ healthy: true, alarms: [], driftWindows: [], reason: null });
    expect(await audited('gate.drift-rechecked')).toBe(3);
  });

  it('fails on drift without a second look when the queue stays busy past the wait; looks again with no queue to ask', async () => {
    await writeWithFailedV2Half('behind, queue busy');
    const busy: QueueDepthPort = { depth: () => Promise.resolve({ waiting: 3, inFlight: 1 }) };
    const waited = await healthGate({ ...suite.ctx, repairQueue: busy }, { repairWaitMs: 1_500 });
    expect(waited.healthy).toBe(false);
    expect(await audited('gate.drift-rechecked')).toBe(3);
    const none = await healthGate(suite.ctx);
    expect(none.healthy).toBe(false);
    expect(await audited('gate.drift-rechecked')).toBe(4);
  });
});
