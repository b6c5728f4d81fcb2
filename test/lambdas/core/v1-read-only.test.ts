import { randomBytes } from 'node:crypto';
import { Pool } from 'pg';
import { runBackfillPhase, runVerifyPhase } from '../../../lambdas/adapters/local/local-migration';
import { startLocalWorkers, type LocalWorkers } from '../../../lambdas/adapters/local/local-workers';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import {
  archivedName,
  finishCleanup,
  RENAME_CONFIRMATION,
  startCleanup,
} from '../../../lambdas/core/cleanup';
import { runCutoverLocally } from '../../../lambdas/core/cutover';
import type { MigrationContext } from '../../../lambdas/core/migration-state';
import { prepareStep } from '../../../lambdas/core/phases';
import { waitForBackup } from '../../../lambdas/core/prepare';
import { V1_TABLE_NAMES } from '../../../lambdas/core/v1-schema';
import { switchWrites } from '../../../lambdas/core/write-switch';
import { rowCounts, seedV1, testConfig } from '../../support/fixtures';
import { testBackup } from '../../support/migration';
import { freshDatabases, testServer, testUrl, type TestDatabases } from '../../support/pg';

/**
 * V1 read by a role that may only SELECT V1's tables (what `v1.secretArn` names on AWS), and
 * written only through the owner pool (`v1.ownerSecretArn`): the whole migration runs, and the
 * rename is the one write, made by the owner.
 */
describe('a migration reading V1 with a read-only role', () => {
  const role = `v1_reader_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  let dbs: TestDatabases;
  let reader: Pool;
  let workers: LocalWorkers;
  let ctx: MigrationContext;

  beforeAll(async () => {
    dbs = await freshDatabases('v1_read_only');
    await seedV1(dbs.v1, { devices: 8, telemetry: 1500, seed: 6 });
    await dbs.v1.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await dbs.v1.query(`GRANT CONNECT ON DATABASE "${dbs.v1Name}" TO ${role}`);
    await dbs.v1.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
    await dbs.v1.query(`GRANT SELECT ON users, devices, device_data, alerts TO ${role}`);
    const { port } = testServer();
    reader = new Pool({
      connectionString: `postgres://${role}:${password}@127.0.0.1:${port}/${dbs.v1Name}`,
      max: 4,
    });
    reader.on('error', () => undefined);
    ctx = {
      v1: reader,
      v2: dbs.v2,
      config: testConfig(dbs, {
        batch: { telemetryWindowRows: 500, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
        cutover: { schedule: [{ percentage: 100, bakeSeconds: 0 }], soakMinutes: 0 },
      }),
      parameters: new MemoryParameters({
        '/iot-migration/v2-traffic-percentage': '0',
        '/iot-migration/dual-write': 'off',
      }),
      actor: 'person:test',
      backup: testBackup(dbs),
    };
    workers = startLocalWorkers(ctx);
  });
  afterAll(async () => {
    await workers.stop();
    await reader.end();
    await dbs.drop();
    const admin = new Pool({ connectionString: testUrl('postgres'), max: 1 });
    await admin.query(`DROP ROLE IF EXISTS ${role}`);
    await admin.end();
  });

  it('cannot write V1 with that role (the test’s premise)', async () => {
    await expect(reader.query(`ALTER TABLE users RENAME TO users_x`)).rejects.toMatchObject({
      code: '42501',
    });
    await expect(reader.query(`DELETE FROM alerts`)).rejects.toMatchObject({ code: '42501' });
  });

  it('prepares, backfills, verifies and cuts over with it alone', async () => {
    await prepareStep(ctx);
    expect((await runBackfillPhase(ctx, workers)).complete).toBe(true);
    const verified = await runVerifyPhase(ctx, workers);
    expect(verified.complete && verified.clean).toBe(true);
    expect((await runCutoverLocally(ctx)).outcome).toBe('complete');
  }, 300_000);

  it('renames V1’s tables only through the owner pool: without it the rename is refused and V1 unchanged', async () => {
    // Cleanup ends the reverse mirror: the writes are switched to V2 first (no write to V1).
    expect(await switchWrites(ctx)).toMatchObject({ primary: 'v2' });
    const before = await rowCounts(dbs.v1, 'public');
    const archive = await startCleanup(ctx, { confirm: RENAME_CONFIRMATION });
    await waitForBackup(ctx.backup!, archive, { pollMs: 10 });

    const refused = await finishCleanup(ctx, archive, { confirm: RENAME_CONFIRMATION }).catch(
      (e: unknown) => e,
    );
    expect(refused).toMatchObject({ code: '42501' });
    expect(await rowCounts(dbs.v1, 'public')).toEqual(before);

    const done = await finishCleanup({ ...ctx, v1Owner: dbs.v1 }, archive, { confirm: RENAME_CONFIRMATION });
    expect(done.renamed).toEqual(V1_TABLE_NAMES.map(archivedName));
    const after = await rowCounts(dbs.v1, 'public');
    for (const table of V1_TABLE_NAMES) expect(after[archivedName(table)]).toBe(before[table]);
  }, 300_000);
});
