import '../../lambdas/core/polyfills';
import { Pool } from 'pg';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import { runVerificationLocally } from '../../lambdas/adapters/local/local-verify';
import type { MigrationConfig } from '../../lambdas/core/config';
import {
  DUAL_WRITE_V2_FAILURE_METRIC,
  repairBatchHandler,
  SHADOW_READ_MISMATCH_METRIC,
  UnsupportedMirroredWriteError,
  withMigration,
  type DualWriteFailure,
  type ShadowMismatch,
} from '../../client';
import { Prisma, type PrismaClient } from '../../prisma/v1/generated/client';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases, type TestDatabases } from '../support/pg';
import { recorder, recordingQueue, v2RowsOf } from './helpers';
import { at, expectVerified, migrationRouter, v1Prisma, v2State, verify } from './prisma-support';

async function setup(prefix: string, options: { devices: number; telemetry: number }) {
  const dbs = await freshDatabases(prefix);
  await seedV1(dbs.v1, { ...options, seed: 5 });
  const config = testConfig(dbs, {
    batch: { telemetryWindowRows: 100, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
  });
  await prepared(dbs, config);
  await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
  const prisma = v1Prisma(dbs.v1);
  return { dbs, config, prisma };
}

function migrated(
  ctx: { dbs: TestDatabases; config: MigrationConfig; prisma: PrismaClient },
  v2: Pool = ctx.dbs.v2,
  options: { v2TimeoutMs?: number } = {},
) {
  const router = migrationRouter(true);
  const queue = recordingQueue();
  const rec = recorder();
  const failures: DualWriteFailure[] = [];
  const mismatches: ShadowMismatch[] = [];
  const db = withMigration(ctx.prisma, {
    v1: ctx.dbs.v1,
    v2,
    router,
    repairQueue: queue,
    tenantId: ctx.config.tenant.id,
    onMetric: rec.onMetric,
    onV2Failure: (f) => void failures.push(f),
    shadowReads: { sampleRate: 1, onMismatch: (m) => void mismatches.push(m) },
    // These tests are about correctness, not latency: on a loaded CI machine a V2 half may take
    // seconds, and the default timeout would turn it into a queued repair the test never runs.
    v2TimeoutMs: options.v2TimeoutMs ?? 60_000,
  });
  return { db, router, queue, rec, failures, mismatches };
}

describe('withMigration: every write of the V1 models through a generated Prisma Client', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  let m: ReturnType<typeof migrated>;
  let dbs: TestDatabases;
  let config: MigrationConfig;
  beforeAll(async () => {
    ctx = await setup('prisma_ext', { devices: 6, telemetry: 120 });
    ({ dbs, config } = ctx);
    m = migrated(ctx);
  });
  afterAll(async () => {
    await ctx.prisma.$disconnect();
    await ctx.dbs.drop();
  });
  afterEach(() => {
    // V2 is healthy here: no write may have needed a repair.
    expect(m.failures.map((f) => f.error.message)).toEqual([]);
    expect(m.queue.bodies).toEqual([]);
  });

  it('matches sql/v1: each model reads back exactly the columns of its V1 table', async () => {
    const models = {
      users: await m.db.user.findFirst(),
      devices: await m.db.device.findFirst(),
      device_data: await m.db.deviceData.findFirst(),
      alerts: await m.db.alert.findFirst(),
    };
    for (const [table, row] of Object.entries(models)) {
      const { rows } = await dbs.v1.query<{ column_name: string }>(
        `SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1`,
        [table],
      );
      expect({ table, fields: Object.keys(row ?? {}).sort() }).toEqual({
        table,
        fields: rows.map((r) => r.column_name).sort(),
      });
    }
  });

  it('the verifier sees a V1 write made around the extension (so a clean report means something)', async () => {
    await ctx.prisma.alert.update({
      where: { id: (await ctx.prisma.alert.findFirstOrThrow()).id },
      data: { message: 'bypassed' },
    });
    const report = await verify(dbs, config, ['alerts']);
    expect(report.clean).toBe(false);
    expect(report.mismatches.map((x) => x.table)).toEqual(['alerts']);
    // Put V2 right again through the extension's own path.
    const alert = await ctx.prisma.alert.findFirstOrThrow({ where: { message: 'bypassed' } });
    await m.db.$migration.writer.mirrorById('alerts', alert.id);
    await expectVerified(dbs, config, ['alerts']);
  });

  it('create: the caller gets what plain Prisma returns (a select without id stays without id)', async () => {
    const user = await m.db.user.create({
      data: {
        id: 'px_user_1',
        email: 'zoë@example.com',
        name: 'Zoë 🚀',
        passwordHash: 'h',
        role: 'ADMIN',
        createdAt: at('2026-03-01T10:00:00.123Z'),
      },
      select: { email: true, role: true },
    });
    expect(user).toEqual({ email: 'zoë@example.com', role: 'ADMIN' });
    const device = await m.db.device.create({
      data: { name: 'probe', type: 'px_type_a', config: [1, { nested: 'é' }, null], ownerId: 'px_user_1' },
    });
    expect(device.id).toMatch(/^c[a-z0-9]{20,}$/); // Prisma's cuid default
    const telemetry = await m.db.deviceData.create({
      data: {
        deviceId: device.id,
        timestamp: at('2026-03-04T00:00:00.001Z'),
        data: { t: 21.5 },
        protocol: 'MQTT',
      },
      omit: { id: true },
    });
    expect('id' in telemetry).toBe(false);
    await m.db.alert.create({
      data: { id: 'px_alert_1', deviceId: device.id, severity: 'HIGH', message: 'hot' },
    });
    await m.db.device.create({
      data: { id: 'px_dev_null', name: 'n', type: 'px_type_b', config: Prisma.DbNull },
    });
    expect((await v2RowsOf(dbs, 'users', 'px_user_1'))[0]).toMatchObject({ name: 'Zoë 🚀' });
    expect((await v2RowsOf(dbs, 'devices', 'px_dev_null'))[0].attributes).toEqual({});
    await expectVerified(dbs, config);
  });

  it('createMany: rows with ids, rows without (bigserial telemetry, cuid devices), skipDuplicates', async () => {
    const users = await m.db.user.createMany({
      data: [
        { id: 'px_many_1', email: 'm1@example.com', passwordHash: 'h' },
        { id: 'px_many_2', email: 'm2@example.com', passwordHash: 'h' },
      ],
    });
    expect(users).toEqual({ count: 2 });
    const devices = await m.db.device.createMany({
      data: [
        { name: 'many a', type: 'px_type_many' },
        { name: 'many b', type: 'px_type_many', ownerId: 'px_many_1' },
      ],
    });
    expect(devices).toEqual({ count: 2 });
    const device = await m.db.device.findFirstOrThrow({ where: { name: 'many b' } });
    const telemetry = await m.db.deviceData.createMany({
      data: Array.from({ length: 30 }, (_, i) => ({
        deviceId: device.id,
        timestamp: new Date(Date.UTC(2026, 2, 5, 0, i)),
        data: { i },
        protocol: 'HTTP',
        source: i % 2 ? null : 'edge',
      })),
    });
    expect(telemetry).toEqual({ count: 30 });
    const again = await m.db.user.createMany({
      data: [
        { id: 'px_many_2', email: 'm2@example.com', passwordHash: 'h' },
        { id: 'px_many_3', email: 'm3@example.com', passwordHash: 'h' },
      ],
      skipDuplicates: true,
    });
    expect(again).toEqual({ count: 1 });
    const returned = await m.db.alert.createManyAndReturn({
      data: [{ deviceId: device.id, severity: 'LOW', message: 'r1' }],
      select: { message: true },
    });
    expect(returned).toEqual([{ message: 'r1' }]);
    expect(await v2RowsOf(dbs, 'users', 'px_many_3')).toHaveLength(1);
    await expectVerified(dbs, config);
  });

  it('update and updateMany: a device type change, a telemetry timestamp move, a filter the update stops matching', async () => {
    await m.db.user.update({ where: { email: 'zoë@example.com' }, data: { name: null, role: 'VIEWER' } });
    const device = await m.db.device.findFirstOrThrow({ where: { type: 'px_type_a' } });
    await m.db.device.update({
      where: { id: device.id },
      data: { type: 'px_type_c', config: { a: { b: [1, 2] } } },
    });
    const telemetry = await m.db.deviceData.findFirstOrThrow({ where: { deviceId: device.id } });
    const moved = await m.db.deviceData.update({
      where: { id: telemetry.id },
      data: { timestamp: at('2026-05-20T10:00:00Z'), data: { moved: true }, source: 'edge' },
    });
    expect(moved.timestamp.toISOString()).toBe('2026-05-20T10:00:00.000Z');
    const open = await m.db.alert.count({ where: { status: 'OPEN' } });
    const closed = await m.db.alert.updateMany({
      where: { status: 'OPEN' },
      data: { status: 'RESOLVED', resolvedAt: at('2026-04-02T00:00:00Z') },
    });
    expect(closed).toEqual({ count: open });
    expect(open).toBeGreaterThan(1);
    const none = await m.db.alert.updateMany({ where: { status: 'NO_SUCH' }, data: { message: 'x' } });
    expect(none).toEqual({ count: 0 });
    const renamed = await m.db.user.update({ where: { id: 'px_many_3' }, data: { id: 'px_many_3b' } });
    expect(renamed.id).toBe('px_many_3b');
    expect(await v2RowsOf(dbs, 'users', 'px_many_3')).toEqual([]);
    await expect(
      m.db.user.update({ where: { id: 'no_such_user' }, data: { name: 'x' } }),
    ).rejects.toMatchObject({
      code: 'P2025',
    });
    await expectVerified(dbs, config);
  });

  it('upsert: the create path and the update path', async () => {
    const created = await m.db.user.upsert({
      where: { id: 'px_upsert' },
      create: { id: 'px_upsert', email: 'up@example.com', passwordHash: 'h' },
      update: { name: 'never' },
    });
    expect(created.name).toBeNull();
    const updated = await m.db.user.upsert({
      where: { id: 'px_upsert' },
      create: { id: 'px_upsert', email: 'up@example.com', passwordHash: 'h' },
      update: { name: 'second time' },
      select: { name: true },
    });
    expect(updated).toEqual({ name: 'second time' });
    expect((await v2RowsOf(dbs, 'users', 'px_upsert'))[0].name).toBe('second time');
    await expectVerified(dbs, config, ['users']);
  });

  it('delete and deleteMany, with V1 cascades (telemetry, alerts) and SET NULL (owner)', async () => {
    const device = await m.db.device.findFirstOrThrow({ where: { name: 'many b' } });
    expect(await m.db.deviceData.count({ where: { deviceId: device.id } })).toBe(30);
    const deleted = await m.db.device.delete({ where: { id: device.id }, select: { name: true } });
    expect(deleted).toEqual({ name: 'many b' });
    expect(await v2RowsOf(dbs, 'devices', device.id)).toEqual([]);
    await m.db.user.delete({ where: { id: 'px_user_1' } });
    const some = await m.db.deviceData.deleteMany({
      where: { protocol: 'MQTT', timestamp: { lt: at('2026-01-01T00:00:00Z') } },
    });
    expect(some.count).toBeGreaterThan(0);
    expect(
      await m.db.deviceData.count({
        where: { protocol: 'MQTT', timestamp: { lt: at('2026-01-01T00:00:00Z') } },
      }),
    ).toBe(0);
    expect(await m.db.alert.deleteMany({ where: { message: 'r1' } })).toEqual({ count: 0 });
    expect(await m.db.user.deleteMany({ where: { id: { in: ['px_many_2', 'nobody'] } } })).toEqual({
      count: 1,
    });
    await expect(m.db.alert.delete({ where: { id: 'no_such_alert' } })).rejects.toMatchObject({
      code: 'P2025',
    });
    await expectVerified(dbs, config);
  });

  it('nested writes: creates three levels deep, and updates, connects, disconnects and deletes through relations', async () => {
    const owner = await m.db.user.create({
      data: {
        id: 'px_nested_user',
        email: 'nested@example.com',
        passwordHash: 'h',
        devices: {
          create: [
            {
              id: 'px_nested_dev_1',
              name: 'nested 1',
              type: 'px_type_nested',
              alerts: {
                create: [
                  { severity: 'LOW', message: 'n1' },
                  { severity: 'HIGH', message: 'n2' },
                ],
              },
              data: {
                createMany: {
                  data: [
                    { timestamp: at('2026-06-01T00:00:00Z'), data: { n: 1 }, protocol: 'MQTT' },
                    { timestamp: at('2026-06-01T00:01:00Z'), data: { n: 2 }, protocol: 'MQTT' },
                  ],
                },
              },
            },
            { name: 'nested 2 (cuid)', type: 'px_type_nested' },
          ],
        },
      },
      include: { devices: true },
    });
    expect(owner.devices).toHaveLength(2);
    await expectVerified(dbs, config);

    const other = await m.db.device.findFirstOrThrow({ where: { ownerId: null } });
    const second = owner.devices.find((d) => d.id !== 'px_nested_dev_1')!;
    await m.db.user.update({
      where: { id: 'px_nested_user' },
      data: {
        name: 'nested owner',
        devices: {
          connect: { id: other.id },
          disconnect: { id: second.id },
          update: {
            where: { id: 'px_nested_dev_1' },
            data: {
              status: 'ONLINE',
              alerts: { updateMany: { where: { severity: 'LOW' }, data: { status: 'ACK' } } },
            },
          },
        },
      },
    });
    await m.db.device.update({
      where: { id: 'px_nested_dev_1' },
      data: {
        owner: { update: { name: 'renamed through its device' } },
        alerts: {
          deleteMany: { severity: 'HIGH' },
          create: { id: 'px_nested_alert', severity: 'MID', message: 'n3' },
        },
        data: { create: { timestamp: at('2026-06-02T00:00:00Z'), data: {}, protocol: 'COAP' } },
      },
    });
    await m.db.alert.update({
      where: { id: 'px_nested_alert' },
      data: { device: { update: { data: { deleteMany: { protocol: 'MQTT' } } } } },
    });
    await m.db.device.update({
      where: { id: second.id },
      data: { owner: { create: { id: 'px_nested_user_2', email: 'n2@example.com', passwordHash: 'h' } } },
    });
    await m.db.user.update({
      where: { id: 'px_nested_user' },
      data: { devices: { delete: { id: other.id } } },
    });
    await m.db.user.update({ where: { id: 'px_nested_user_2' }, data: { devices: { set: [] } } });
    await m.db.deviceData.create({
      data: {
        timestamp: at('2026-06-03T00:00:00Z'),
        data: { via: 'connectOrCreate' },
        protocol: 'HTTP',
        device: {
          connectOrCreate: {
            where: { id: 'px_nested_dev_3' },
            create: { id: 'px_nested_dev_3', name: 'c', type: 'px_type_nested' },
          },
        },
      },
    });
    expect(await m.db.device.findUniqueOrThrow({ where: { id: second.id } })).toMatchObject({
      ownerId: null,
    });
    expect(await m.db.deviceData.count({ where: { deviceId: 'px_nested_dev_1' } })).toBe(1);
    expect(await v2RowsOf(dbs, 'devices', other.id)).toEqual([]);
    await expectVerified(dbs, config);
  });

  it('an interactive transaction reaches V2 only after its commit', async () => {
    const result = await m.db.$transaction(async (tx) => {
      await tx.user.create({ data: { id: 'px_tx_user', email: 'tx@example.com', passwordHash: 'h' } });
      await tx.device.update({
        where: { id: 'px_nested_dev_1' },
        data: { ownerId: 'px_tx_user', lastSeenAt: at('2026-07-01T00:00:00Z') },
      });
      await tx.alert.deleteMany({ where: { deviceId: 'px_nested_dev_1' } });
      await tx.deviceData.createMany({
        data: [
          {
            deviceId: 'px_nested_dev_1',
            timestamp: at('2026-07-01T00:00:00Z'),
            data: { tx: 1 },
            protocol: 'MQTT',
          },
        ],
      });
      // Nothing has reached V2 yet.
      expect(await v2RowsOf(dbs, 'users', 'px_tx_user')).toEqual([]);
      expect((await v2RowsOf(dbs, 'devices', 'px_nested_dev_1'))[0].owner_id).toBe('px_nested_user');
      return 'committed';
    });
    expect(result).toBe('committed');
    expect(await v2RowsOf(dbs, 'users', 'px_tx_user')).toHaveLength(1);
    expect(await v2RowsOf(dbs, 'alerts', 'px_nested_alert')).toEqual([]);
    await expectVerified(dbs, config);
  });

  it('an interactive transaction that rolls back sends nothing to V2', async () => {
    const before = await Promise.all(
      (['users', 'devices', 'telemetry', 'alerts'] as const).map((t) => v2State(dbs, t)),
    );
    const failure = new Error('the backend changed its mind');
    await expect(
      m.db.$transaction(async (tx) => {
        await tx.user.create({ data: { id: 'px_rollback', email: 'rb@example.com', passwordHash: 'h' } });
        await tx.device.update({ where: { id: 'px_nested_dev_1' }, data: { status: 'ROLLED BACK' } });
        await tx.deviceData.deleteMany({ where: { deviceId: 'px_nested_dev_1' } });
        await tx.user.update({
          where: { id: 'px_nested_user' },
          data: { devices: { create: { name: 'rb', type: 'rb' } } },
        });
        throw failure;
      }),
    ).rejects.toBe(failure);
    // A V1 error inside the transaction rolls it back too.
    await expect(
      m.db.$transaction(async (tx) => {
        await tx.user.create({ data: { id: 'px_rollback_2', email: 'rb2@example.com', passwordHash: 'h' } });
        await tx.user.create({ data: { id: 'px_rollback_3', email: 'rb2@example.com', passwordHash: 'h' } });
      }),
    ).rejects.toMatchObject({ code: 'P2002' });
    const after = await Promise.all(
      (['users', 'devices', 'telemetry', 'alerts'] as const).map((t) => v2State(dbs, t)),
    );
    expect(after).toEqual(before);
    expect(await m.db.user.findUnique({ where: { id: 'px_rollback' } })).toBeNull();
    await expectVerified(dbs, config);
  });

  it('a write of the outer client inside a transaction callback is not part of it, and reaches V2 even when it rolls back', async () => {
    await expect(
      m.db.$transaction(async (tx) => {
        await tx.user.create({ data: { id: 'px_inner', email: 'inner@example.com', passwordHash: 'h' } });
        await m.db.user.create({ data: { id: 'px_outer', email: 'outer@example.com', passwordHash: 'h' } });
        expect(await v2RowsOf(dbs, 'users', 'px_outer')).toHaveLength(1);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await v2RowsOf(dbs, 'users', 'px_inner')).toEqual([]);
    expect(await v2RowsOf(dbs, 'users', 'px_outer')).toHaveLength(1);
    await expectVerified(dbs, config, ['users']);
  });

  it('a batch transaction: single-row writes are mirrored after it; writes whose rows it cannot know are refused', async () => {
    const [user, device] = await m.db.$transaction([
      m.db.user.create({ data: { id: 'px_batch', email: 'batch@example.com', passwordHash: 'h' } }),
      m.db.device.update({ where: { id: 'px_nested_dev_1' }, data: { status: 'BATCHED' } }),
    ]);
    expect([user.id, device.status]).toEqual(['px_batch', 'BATCHED']);
    await expect(
      m.db.$transaction([
        m.db.user.create({ data: { id: 'px_batch_2', email: 'batch2@example.com', passwordHash: 'h' } }),
        m.db.alert.updateMany({ where: {}, data: { status: 'X' } }),
      ]),
    ).rejects.toBeInstanceOf(UnsupportedMirroredWriteError);
    expect(await m.db.user.findUnique({ where: { id: 'px_batch_2' } })).toBeNull();
    await expectVerified(dbs, config);
  });

  it('offers the router decision, and shadow-reads findUnique results on V2', async () => {
    m.router.target = 'v2';
    expect(m.db.$migration.route('px_batch')).toBe('v2');
    m.router.target = 'v1';
    expect(m.db.$migration.route('px_batch')).toBe('v1');

    await m.db.user.findUnique({ where: { id: 'px_batch' } });
    await m.db.user.findUnique({ where: { id: 'nobody_here' } });
    await m.db.$migration.idle();
    expect(m.mismatches).toEqual([]);
    // V2 changed behind the migration's back: the next shadow read names the column.
    await dbs.v2.query(`UPDATE users SET name = 'tampered' WHERE id = 'px_batch'`);
    const row = await m.db.user.findUnique({ where: { id: 'px_batch' } });
    expect(row?.name).toBeNull();
    await m.db.$migration.idle();
    expect(m.mismatches).toEqual([{ table: 'users', id: 'px_batch', kind: 'different', columns: ['name'] }]);
    expect(m.rec.count(SHADOW_READ_MISMATCH_METRIC)).toBe(1);
    await m.db.$migration.writer.mirrorById('users', 'px_batch');
  });

  it('passes straight through while dual-write is off', async () => {
    const before = await Promise.all(
      (['users', 'devices', 'telemetry', 'alerts'] as const).map((t) => v2State(dbs, t)),
    );
    m.router.on = false;
    try {
      const user = await m.db.user.create({
        data: { id: 'px_off', email: 'off@example.com', passwordHash: 'h' },
        select: { email: true },
      });
      expect(user).toEqual({ email: 'off@example.com' });
      await m.db.device.updateMany({ where: { type: 'px_type_nested' }, data: { status: 'OFF' } });
      await m.db.$transaction(async (tx) => tx.alert.deleteMany({ where: { id: 'nothing' } }));
      await m.db.user.findUnique({ where: { id: 'px_batch' } });
      expect(
        await m.db.deviceData.createMany({
          data: [{ deviceId: 'px_nested_dev_1', timestamp: new Date(), data: 1, protocol: 'X' }],
        }),
      ).toEqual({ count: 1 });
    } finally {
      m.router.on = true;
    }
    const after = await Promise.all(
      (['users', 'devices', 'telemetry', 'alerts'] as const).map((t) => v2State(dbs, t)),
    );
    expect(after).toEqual(before);
    const report = await verify(dbs, config);
    expect(new Set(report.mismatches.map((x) => x.table))).toEqual(
      new Set(['users', 'devices', 'telemetry']),
    );
    await m.db.$migration.idle();
    expect(m.mismatches).toEqual([{ table: 'users', id: 'px_batch', kind: 'different', columns: ['name'] }]);
  });
});

describe('withMigration while V2 is down, then the repair worker', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    ctx = await setup('prisma_down', { devices: 4, telemetry: 60 });
  });
  afterAll(async () => {
    await ctx.prisma.$disconnect();
    await ctx.dbs.drop();
  });

  it('never fails the caller, queues a repair for every row, and the repairs make V2 whole', async () => {
    const { dbs, config } = ctx;
    const closed = new Pool({ connectionString: dbs.v2Url });
    await closed.end();
    const m = migrated(ctx, closed);
    const device = await m.db.device.findFirstOrThrow();
    const created = await m.db.user.create({
      data: { id: 'down_user', email: 'down@example.com', passwordHash: 'h' },
    });
    expect(created.id).toBe('down_user');
    await m.db.device.update({ where: { id: device.id }, data: { type: 'down_type', ownerId: 'down_user' } });
    const telemetry = await m.db.deviceData.createMany({
      data: [
        { deviceId: device.id, timestamp: at('2026-02-02T00:00:00Z'), data: { x: 1 }, protocol: 'HTTP' },
        { deviceId: device.id, timestamp: at('2026-02-02T00:00:01Z'), data: { x: 2 }, protocol: 'HTTP' },
      ],
    });
    expect(telemetry).toEqual({ count: 2 });
    const alert = await m.db.alert.findFirstOrThrow();
    await m.db.alert.delete({ where: { id: alert.id } });
    await m.db.$transaction(async (tx) => {
      await tx.user.update({ where: { id: 'down_user' }, data: { name: 'in a transaction' } });
    });

    expect(m.rec.count(DUAL_WRITE_V2_FAILURE_METRIC)).toBe(6);
    expect(m.failures.every((f) => f.repairQueued)).toBe(true);
    const named = m.queue.bodies.map((b) => JSON.parse(b) as { table: string; id: string });
    expect(named.map((n) => n.table).sort()).toEqual([
      'alerts',
      'devices',
      'telemetry',
      'telemetry',
      'users',
      'users',
    ]);
    expect((await verify(dbs, config)).clean).toBe(false);

    // The repair worker (as the stack runs it) re-syncs each named row from V1.
    const handler = repairBatchHandler({ v1: dbs.v1, v2: dbs.v2, tenantId: config.tenant.id });
    const result = await handler(
      m.queue.bodies.map((body, i) => ({ messageId: String(i), body, receiveCount: 1 })),
    );
    expect(result.batchItemFailures).toEqual([]);
    await expectVerified(dbs, config);
  });
});

describe('withMigration under a mixed concurrent workload', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    ctx = await setup('prisma_mixed', { devices: 8, telemetry: 400 });
  });
  afterAll(async () => {
    await ctx.prisma.$disconnect();
    await ctx.dbs.drop();
  });

  it('ends with a clean Phase 3 verification', async () => {
    const { dbs, config } = ctx;
    const m = migrated(ctx);
    const devices = (await m.db.device.findMany({ select: { id: true } })).map((d) => d.id);
    let n = 0;
    const op = async (i: number) => {
      const device = devices[Math.floor(i / 3) % devices.length];
      switch (i % 8) {
        case 0:
          await m.db.deviceData.create({
            data: {
              deviceId: device,
              timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
              data: { i },
              protocol: 'MQTT',
            },
          });
          break;
        case 1:
          await m.db.device.update({
            where: { id: device },
            data: { status: `S${i}`, lastSeenAt: new Date() },
          });
          break;
        case 2:
          await m.db.alert.create({ data: { deviceId: device, severity: 'LOW', message: `m${i}` } });
          break;
        case 3:
          await m.db.alert.updateMany({
            where: { deviceId: device, status: 'OPEN' },
            data: { status: 'ACK' },
          });
          break;
        case 4:
          await m.db.$transaction(async (tx) => {
            await tx.user.upsert({
              where: { id: `mix_user_${i % 5}` },
              create: { id: `mix_user_${i % 5}`, email: `mix${i % 5}@example.com`, passwordHash: 'h' },
              update: { name: `n${i}` },
            });
            await tx.device.update({ where: { id: device }, data: { ownerId: `mix_user_${i % 5}` } });
          });
          break;
        case 5:
          await m.db.deviceData.deleteMany({ where: { deviceId: device, data: { path: ['i'], lt: i - 8 } } });
          break;
        case 6:
          await m.db.device.update({
            where: { id: device },
            data: {
              alerts: { create: { severity: 'HIGH', message: `nested ${i}` } },
              data: {
                create: { timestamp: new Date(Date.UTC(2026, 0, 2, 0, 0, i)), data: { i }, protocol: 'HTTP' },
              },
            },
          });
          break;
        default:
          await m.db.alert.deleteMany({ where: { deviceId: device, severity: 'HIGH' } });
      }
      n++;
    };
    // Eight writers at once, each running its share of 160 operations.
    await Promise.all(
      Array.from({ length: 8 }, async (_, lane) => {
        for (let i = lane; i < 160; i += 8) await op(i);
      }),
    );
    expect(n).toBe(160);
    expect(m.failures.map((f) => f.error.message)).toEqual([]);
    await expectVerified(dbs, config);
  });

  it('an update of the id: the old id leaves V2 before the new one arrives, however slow V2 is to delete', async () => {
    const { dbs, config } = ctx;
    // V2 answers every DELETE 400 ms late: a new id mirrored alongside the old id's removal
    // would reach V2 first, and V2's unique (tenant, email) would refuse it.
    const m = migrated(ctx, slowDeletes(dbs.v2, 400));
    await m.db.user.create({ data: { id: 'rn_old', email: 'rn@example.com', passwordHash: 'h' } });
    await m.db.user.createMany({
      data: [
        { id: 'rn_many_a', email: 'rna@example.com', passwordHash: 'h' },
        { id: 'rn_many_b', email: 'rnb@example.com', passwordHash: 'h' },
      ],
    });
    await m.db.user.update({ where: { id: 'rn_old' }, data: { id: 'rn_new' } });
    await m.db.$transaction(async (tx) => {
      await tx.user.update({ where: { id: 'rn_many_a' }, data: { id: 'rn_many_a2' } });
    });
    await m.db.user.updateManyAndReturn({ where: { id: 'rn_many_b' }, data: { id: 'rn_many_b2' } });
    expect(m.failures.map((f) => f.error.message)).toEqual([]);
    expect(m.queue.bodies).toEqual([]);
    const { rows } = await dbs.v2.query<{ id: string }>(
      `SELECT id FROM users WHERE id LIKE 'rn\\_%' ORDER BY id`,
    );
    expect(rows.map((r) => r.id)).toEqual(['rn_many_a2', 'rn_many_b2', 'rn_new']);
    await expectVerified(dbs, config, ['users']);
  });

  it('deleteMany of more rows than one statement takes deletes them in one transaction and mirrors every delete', async () => {
    const { dbs, config } = ctx;
    const m = migrated(ctx);
    const device = (await m.db.device.findFirstOrThrow()).id;
    // 5,100 readings written around the extension, then copied to V2 by the verifier's repair.
    await dbs.v1.query(
      `INSERT INTO device_data ("deviceId", "timestamp", data, protocol)
       SELECT $1, timestamp '2026-08-01' + g * interval '1 second', jsonb_build_object('bulk', g), 'BULK'
         FROM generate_series(1, 5100) g`,
      [device],
    );
    expect((await runVerificationLocally({ v1: dbs.v1, v2: dbs.v2, config }, { sampleSize: 0 })).clean).toBe(
      true,
    );
    expect(
      (await dbs.v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE protocol = 'BULK'`)).rows[0].n,
    ).toBe(5100);

    expect(await m.db.deviceData.deleteMany({ where: { protocol: 'BULK' } })).toEqual({ count: 5100 });
    expect(
      (await dbs.v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE protocol = 'BULK'`)).rows[0].n,
    ).toBe(0);
    expect(m.failures).toEqual([]);
    await expectVerified(dbs, config);
  });
});

/** The same V2 pool, with every DELETE answered `ms` late. */
function slowDeletes(v2: Pool, ms: number): Pool {
  return new Proxy(v2, {
    get(target, prop, receiver) {
      if (prop !== 'query') return Reflect.get(target, prop, receiver) as unknown;
      return async (text: string | { text: string }, values?: unknown[]) => {
        const sql = typeof text === 'string' ? text : text.text;
        if (/^\s*DELETE\b/i.test(sql)) await new Promise((r) => setTimeout(r, ms));
        return target.query(text as string, values);
      };
    },
  });
}

describe('withMigration options', () => {
  const client = {
    $extends: () => {
      throw new Error('must not be extended');
    },
    $transaction: async () => undefined,
  };
  const base = { v1: new Pool(), v2: new Pool(), repairQueue: recordingQueue() };
  afterAll(() => Promise.all([base.v1.end(), base.v2.end()]));
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      'a router without route()',
      { router: { dualWriteEnabled: () => true } },
      /router: must have a route\(\)/,
    ],
    ['a mirror concurrency of 0', { router: migrationRouter(), mirrorConcurrency: 0 }, /mirrorConcurrency/],
    ['a bad tenant id', { router: migrationRouter(), tenantId: '' }, /tenantId/],
  ];

  it.each(cases)('refuses %s with ConfigError before extending anything', (_what, options, message) => {
    const call = () =>
      withMigration(client, { ...base, ...options } as unknown as Parameters<typeof withMigration>[1]);
    expect(call).toThrow(
      expect.objectContaining({ name: 'ConfigError', message: expect.stringMatching(message) }),
    );
  });
});
