import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { migrationStatus } from '../../../lambdas/core/checklist';
import { ensureControlSchema, type MigrationContext } from '../../../lambdas/core/migration-state';
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
