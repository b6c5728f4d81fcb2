import '../../lambdas/core/polyfills';
import type { WritePrimary } from '../../lambdas/ports/parameters';
import { PrismaWriteAfterWriteSwitchError, withMigration } from '../../client';
import type { PrismaClient } from '../../prisma/v1/generated/client';
import { testConfig } from '../support/fixtures';
import { preparedDatabases } from '../support/migration';
import type { TestDatabases } from '../support/pg';
import { recordingQueue } from './helpers';
import { expectVerified, v1Prisma, v2State } from './prisma-support';

/**
 * The Prisma extension after the write switch: V1's Prisma client writes V1, so while V2 is the
 * write primary its writes of the V1 models are refused before anything is written, and the
 * backend writes through `$migration.writer` (V2 first, V1 mirrored). Reads still pass.
 */
describe('withMigration while the writes are switched to V2', () => {
  let dbs: TestDatabases;
  let prisma: PrismaClient;
  let config: ReturnType<typeof testConfig>;
  const router = {
    primary: 'v2' as WritePrimary,
    dualWriteEnabled: () => true,
    route: () => 'v2' as const,
    writePrimary() {
      return this.primary;
    },
  };
  let db: ReturnType<typeof withMigration<PrismaClient>>;

  beforeAll(async () => {
    ({ dbs, config } = await preparedDatabases(
      'prisma_v2p',
      { devices: 3, telemetry: 30, seed: 9 },
      { backfilled: true },
    ));
    prisma = v1Prisma(dbs.v1);
    db = withMigration(prisma, {
      v1: dbs.v1,
      v2: dbs.v2,
      router,
      repairQueue: recordingQueue(),
      tenantId: config.tenant.id,
      shadowReads: false,
      v2TimeoutMs: 60_000,
    });
  });
  afterAll(async () => {
    await prisma.$disconnect();
    await dbs.drop();
  });

  const tables = ['users', 'devices', 'telemetry', 'alerts'] as const;
  const v1Count = async (table: string) =>
    (await dbs.v1.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n;

  it('refuses every kind of V1 model write with a named error, writing nothing to V1 or V2', async () => {
    const device = (await dbs.v1.query<{ id: string }>(`SELECT id FROM devices ORDER BY id LIMIT 1`)).rows[0]
      .id;
    const v2Before = await Promise.all(tables.map((t) => v2State(dbs, t)));
    const v1Before = await Promise.all(['users', 'devices', 'device_data', 'alerts'].map(v1Count));
    const attempts: [string, () => Promise<unknown>][] = [
      [
        'User.create',
        () => db.user.create({ data: { id: 'p2_u', email: 'p2@example.com', passwordHash: 'h' } }),
      ],
      ['Device.update', () => db.device.update({ where: { id: device }, data: { status: 'REFUSED' } })],
      [
        'DeviceData.createMany',
        () =>
          db.deviceData.createMany({
            data: [{ deviceId: device, timestamp: new Date(), data: {}, protocol: 'X' }],
          }),
      ],
      [
        'Alert.upsert',
        () =>
          db.alert.upsert({
            where: { id: 'p2_a' },
            create: { id: 'p2_a', deviceId: device, severity: 'LOW', message: 'm' },
            update: { message: 'n' },
          }),
      ],
      ['Device.deleteMany', () => db.device.deleteMany({ where: { id: device } })],
      [
        'Device.update',
        () =>
          db.$transaction(async (tx) => tx.device.update({ where: { id: device }, data: { status: 'TX' } })),
      ],
    ];
    for (const [what, attempt] of attempts) {
      const error = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(PrismaWriteAfterWriteSwitchError);
      expect((error as Error).message).toContain(`Cannot write ${what} through V1's Prisma client`);
      expect((error as Error).message).toMatch(/\$migration\.writer/);
    }
    expect(await Promise.all(tables.map((t) => v2State(dbs, t)))).toEqual(v2Before);
    expect(await Promise.all(['users', 'devices', 'device_data', 'alerts'].map(v1Count))).toEqual(v1Before);
    // Reads still pass through.
    expect(await db.device.findUnique({ where: { id: device } })).toMatchObject({ id: device });
    expect(db.$migration.writePrimary()).toBe('v2');
  });

  it('writes through $migration.writer go to V2 first and V1 follows; back on V1, Prisma writes again', async () => {
    const device = (await dbs.v1.query<{ id: string }>(`SELECT id FROM devices ORDER BY id LIMIT 1`)).rows[0]
      .id;
    const row = await db.$migration.writer.insert('alerts', {
      id: 'p2_writer',
      deviceId: device,
      severity: 'HIGH',
      message: 'through the writer',
    });
    expect(row).toMatchObject({ id: 'p2_writer', message: 'through the writer' });
    expect((await dbs.v2.query(`SELECT message FROM alerts WHERE id = 'p2_writer'`)).rows).toEqual([
      { message: 'through the writer' },
    ]);
    expect(await db.alert.findUnique({ where: { id: 'p2_writer' } })).toMatchObject({
      message: 'through the writer',
    });
    router.primary = 'v1';
    await db.alert.update({ where: { id: 'p2_writer' }, data: { message: 'V1 first again' } });
    expect((await dbs.v2.query(`SELECT message FROM alerts WHERE id = 'p2_writer'`)).rows).toEqual([
      { message: 'V1 first again' },
    ]);
    await expectVerified(dbs, config);
  });
});
