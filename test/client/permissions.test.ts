import '../../lambdas/core/polyfills';
import { randomBytes } from 'node:crypto';
import { Client, Pool } from 'pg';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import { withMigration, type DualWriteFailure } from '../../client';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases, testServer, testUrl, type TestDatabases } from '../support/pg';
import { recordingQueue } from './helpers';
import { expectVerified, migrationRouter, v1Prisma } from './prisma-support';

/**
 * The database grants client/README.md documents, given to a role of their own: V1 as the
 * backend already has it (its Prisma writes), V2 exactly what the dual writer and the shadow
 * reader need. Nothing on the control schema, no DDL.
 */
const V1_GRANTS = [
  'GRANT USAGE ON SCHEMA public TO {role}',
  'GRANT SELECT, INSERT, UPDATE, DELETE ON users, devices, device_data, alerts TO {role}',
  'GRANT USAGE ON SEQUENCE device_data_id_seq TO {role}',
];
const V2_GRANTS = [
  'GRANT USAGE ON SCHEMA public TO {role}',
  'GRANT SELECT, INSERT, UPDATE, DELETE ON users, devices, telemetry, alerts TO {role}',
  'GRANT SELECT, INSERT ON device_templates TO {role}',
];

describe('the backend role needs only the documented grants', () => {
  let dbs: TestDatabases;
  let role: string;
  const pools: Pool[] = [];
  beforeAll(async () => {
    dbs = await freshDatabases('grants');
    await seedV1(dbs.v1, { devices: 3, telemetry: 30 });
    const config = testConfig(dbs);
    await prepared(dbs, config);
    await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
    role = `backend_${randomBytes(4).toString('hex')}`;
    await dbs.v1.query(`CREATE ROLE ${role} LOGIN PASSWORD '${role}'`);
    for (const [pool, grants] of [
      [dbs.v1, V1_GRANTS],
      [dbs.v2, V2_GRANTS],
    ] as const) {
      for (const grant of grants) await pool.query(grant.replace('{role}', role));
    }
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await dbs.drop();
    const admin = new Client({ connectionString: testUrl('postgres') });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${role}`).finally(() => admin.end());
  });

  it('writes through the Prisma extension, dual-writes and shadow-reads as that role', async () => {
    const { port } = testServer();
    const as = (database: string) => {
      const pool = new Pool({ connectionString: `postgres://${role}:${role}@127.0.0.1:${port}/${database}` });
      pools.push(pool);
      return pool;
    };
    const v1 = as(dbs.v1Name);
    const v2 = as(dbs.v2Name);
    const config = testConfig(dbs);
    const prisma = v1Prisma(v1);
    const failures: DualWriteFailure[] = [];
    const shadowErrors: string[] = [];
    const queue = recordingQueue();
    const db = withMigration(prisma, {
      v1,
      v2,
      router: migrationRouter(true),
      repairQueue: queue,
      tenantId: config.tenant.id,
      onV2Failure: (f) => void failures.push(f),
      shadowReads: { sampleRate: 1, onError: (e) => void shadowErrors.push(e.message) },
    });
    try {
      // The control schema is out of the role's reach.
      await expect(v2.query(`SELECT * FROM migration_control.windows`)).rejects.toMatchObject({
        code: '42501',
      });
      const device = await db.device.create({
        data: {
          name: 'granted',
          type: 'grants_new_type',
          owner: { create: { email: 'g@example.com', passwordHash: 'h' } },
        },
      });
      await db.deviceData.createMany({
        data: [{ deviceId: device.id, timestamp: new Date(), data: { g: 1 }, protocol: 'MQTT' }],
      });
      await db.deviceData.updateMany({
        where: { deviceId: device.id },
        data: { timestamp: new Date(Date.UTC(2025, 0, 1)) },
      });
      await db.$transaction(async (tx) => {
        await tx.alert.create({
          data: { id: 'grants_alert', deviceId: device.id, severity: 'LOW', message: 'm' },
        });
        await tx.device.update({ where: { id: device.id }, data: { status: 'ONLINE' } });
      });
      await db.device.findUnique({ where: { id: device.id } });
      await db.alert.deleteMany({ where: { id: 'grants_alert' } });
      await db.user.deleteMany({ where: { email: 'g@example.com' } });
      await db.$migration.idle();
      expect(failures.map((f) => f.error.message)).toEqual([]);
      expect(shadowErrors).toEqual([]);
      expect(queue.bodies).toEqual([]);
      await expectVerified(dbs, config);
    } finally {
      await prisma.$disconnect();
    }
  });
});
