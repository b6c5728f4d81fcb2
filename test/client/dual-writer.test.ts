/**
 * This suite runs in a non-UTC Node time zone (India, UTC+05:30, no daylight saving), as a
 * backend may: the dual writes must not depend on the zone.
 * @jest-environment ./test/support/time-zone-environment.ts
 * @jest-environment-options {"timeZone": "Asia/Kolkata"}
 */
import '../../lambdas/core/polyfills';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import { InvalidInputError } from '../../lambdas/core/errors';
import { templateIdFor } from '../../lambdas/core/mapping';
import { describeEachStorage, type StorageCase } from '../support/servers';
import {
  dualWriterSuite,
  dualWriteSwitch,
  expectAllInSync,
  expectRowInSync,
  minimalUser,
  useDualWriterSuite,
  whileDualWriteOff,
  v2RowsOf,
} from './helpers';

/** The suites' DualWriter, V1 the write primary, on V1 seeded with `options` (seed 3). */
const setup = (prefix: string, options: { devices: number; telemetry: number }, storage?: StorageCase) =>
  dualWriterSuite(prefix, { router: dualWriteSwitch(true), seed: { ...options, seed: 3 }, storage });

const at = (iso: string) => new Date(iso);

describeEachStorage('DualWriter', (storage) => {
  // Every test here runs with a healthy V2: no write may have needed a repair.
  const ctx = useDualWriterSuite(() => setup('dualw', { devices: 4, telemetry: 50 }, storage));

  it('inserts into V1 and V2 with the exact mapping, and returns the V1 row as stored', async () => {
    const user = await ctx.writer.insert('users', {
      id: 'dw_user_1',
      email: 'zoë@example.com',
      name: 'Zoë 🚀',
      passwordHash: 'hash',
      role: 'ADMIN',
      // An offset, not UTC: V1 must hold the UTC wall time (Prisma's convention).
      createdAt: '2026-03-01T12:00:00.123+02:00',
      updatedAt: at('2026-03-02T00:00:00Z'),
    });
    expect(user).toMatchObject({ id: 'dw_user_1', role: 'ADMIN', name: 'Zoë 🚀' });
    expect(user.createdAt.toISOString()).toBe('2026-03-01T10:00:00.123Z');
    const raw = await ctx.dbs.v1.query(`SELECT "createdAt"::text AS t FROM users WHERE id = 'dw_user_1'`);
    expect(raw.rows[0].t).toBe('2026-03-01 10:00:00.123');

    const d1 = await ctx.writer.insert('devices', {
      id: 'dw_dev_1',
      name: 'probe',
      type: 'dw_type_a',
      ownerId: user.id,
      updatedAt: at('2026-03-02T00:00:00Z'),
    });
    expect(d1.config).toBeNull();
    const d2 = await ctx.writer.insert('devices', {
      id: 'dw_dev_2',
      name: 'probe 2',
      type: 'dw_type_a',
      config: [1, { nested: 'é' }, null],
      lastSeenAt: at('2026-03-03T04:05:06.789Z'),
      updatedAt: at('2026-03-03T00:00:00Z'),
    });
    const t1 = await ctx.writer.insert('telemetry', {
      deviceId: d1.id,
      timestamp: at('2026-03-04T00:00:00.001Z'),
      data: [{ temp: 21.5 }, 'x'],
      protocol: 'MQTT',
    });
    expect(t1.id).toMatch(/^[0-9]+$/);
    expect(t1.source).toBeNull();
    const a1 = await ctx.writer.insert('alerts', {
      id: 'dw_alert_1',
      deviceId: d2.id,
      severity: 'HIGH',
      message: 'too hot',
    });

    for (const [table, id] of [
      ['users', user.id],
      ['devices', d1.id],
      ['devices', d2.id],
      ['telemetry', t1.id],
      ['alerts', a1.id],
    ] as const) {
      await expectRowInSync(ctx.dbs, ctx.config, table, id);
    }
    const v2Device = (await v2RowsOf(ctx.dbs, 'devices', d1.id))[0];
    expect(v2Device.attributes).toEqual({});
    expect(v2Device.metadata).toEqual({ migratedFrom: 'v1', originalType: 'dw_type_a' });
    expect((await v2RowsOf(ctx.dbs, 'telemetry', t1.id))[0]).toMatchObject({
      source: 'migrated',
      quality: 'GOOD',
    });
    // One default template for the new type, shared by both devices.
    const templates = await ctx.dbs.v2.query(
      `SELECT id FROM device_templates WHERE device_type = 'dw_type_a'`,
    );
    expect(templates.rows).toEqual([{ id: templateIdFor(ctx.config.tenant.id, 'dw_type_a') }]);
    expect((await v2RowsOf(ctx.dbs, 'devices', d2.id))[0].template_id).toBe(templates.rows[0].id);
    expect(ctx.queue.bodies).toEqual([]);
  });

  it('updates V2 to the newest V1 state, including a device type change and a telemetry timestamp move', async () => {
    const user = await ctx.writer.update('users', 'dw_user_1', {
      name: null,
      role: 'VIEWER',
      updatedAt: at('2026-04-01T00:00:00Z'),
    });
    expect(user).toMatchObject({ name: null, role: 'VIEWER' });
    await ctx.writer.update('devices', 'dw_dev_1', { type: 'dw_type_b', config: { a: { b: [1, 2] } } });
    const [telemetry] = (
      await ctx.dbs.v1.query(`SELECT id::text AS id FROM device_data WHERE "deviceId" = 'dw_dev_1'`)
    ).rows;
    const moved = await ctx.writer.update('telemetry', telemetry.id, {
      timestamp: at('2026-05-20T10:00:00Z'),
      data: { temp: 19 },
      source: 'edge',
    });
    expect(moved?.timestamp.toISOString()).toBe('2026-05-20T10:00:00.000Z');
    await ctx.writer.update('alerts', 'dw_alert_1', {
      status: 'RESOLVED',
      resolvedAt: at('2026-04-02T00:00:00Z'),
    });

    await expectRowInSync(ctx.dbs, ctx.config, 'users', 'dw_user_1');
    const device = await expectRowInSync(ctx.dbs, ctx.config, 'devices', 'dw_dev_1');
    expect(device?.template_id).toBe(templateIdFor(ctx.config.tenant.id, 'dw_type_b'));
    // No stale copy under the old timestamp: exactly one V2 row, at the new instant.
    const rows = await v2RowsOf(ctx.dbs, 'telemetry', telemetry.id);
    expect(rows.map((r) => (r.timestamp as Date).toISOString())).toEqual(['2026-05-20T10:00:00.000Z']);
    await expectRowInSync(ctx.dbs, ctx.config, 'telemetry', telemetry.id);
    await expectRowInSync(ctx.dbs, ctx.config, 'alerts', 'dw_alert_1');
  });

  it('returns null for an update of a row V1 does not have, and writes nothing', async () => {
    expect(await ctx.writer.update('users', 'no_such_user', { name: 'x' })).toBeNull();
    expect(await v2RowsOf(ctx.dbs, 'users', 'no_such_user')).toEqual([]);
  });

  it('deletes the V2 row of a V1 delete (and V2 cascades as V1 does)', async () => {
    const [telemetry] = (
      await ctx.dbs.v1.query(`SELECT id::text AS id FROM device_data WHERE "deviceId" = 'dw_dev_1'`)
    ).rows;
    const deleted = await ctx.writer.delete('telemetry', telemetry.id);
    expect(deleted?.id).toBe(telemetry.id);
    expect(await v2RowsOf(ctx.dbs, 'telemetry', telemetry.id)).toEqual([]);
    await ctx.writer.delete('devices', 'dw_dev_2');
    expect(await v2RowsOf(ctx.dbs, 'devices', 'dw_dev_2')).toEqual([]);
    expect(await v2RowsOf(ctx.dbs, 'alerts', 'dw_alert_1')).toEqual([]);
    expect((await ctx.dbs.v1.query(`SELECT 1 FROM alerts WHERE id = 'dw_alert_1'`)).rows).toEqual([]);
    expect(await ctx.writer.delete('alerts', 'dw_alert_1')).toBeNull();
  });

  it('writes V1 only while dual-write is off, and V2 again once it is back on', async () => {
    await whileDualWriteOff(ctx, async () => {
      await ctx.writer.insert('users', minimalUser('dw_off_user', at('2026-01-01T00:00:00Z')));
      await ctx.writer.update('users', 'dw_user_1', { name: 'changed while off' });
      expect((await ctx.dbs.v1.query(`SELECT name FROM users WHERE id = 'dw_user_1'`)).rows[0].name).toBe(
        'changed while off',
      );
      expect(await v2RowsOf(ctx.dbs, 'users', 'dw_off_user')).toEqual([]);
      expect((await v2RowsOf(ctx.dbs, 'users', 'dw_user_1'))[0].name).toBeNull();
    });
    await ctx.writer.update('users', 'dw_off_user', { name: 'on again' });
    await expectRowInSync(ctx.dbs, ctx.config, 'users', 'dw_off_user');
    expect(ctx.queue.bodies).toEqual([]);
  });

  it('refuses a row with unknown or malformed columns before anything is written', async () => {
    const before = (await ctx.dbs.v1.query('SELECT count(*)::int AS n FROM users')).rows[0].n;
    const bad = [
      () =>
        ctx.writer.insert('users', {
          id: 'x1',
          email: 'x1@example.com',
          passwordHash: 'h',
          updatedAt: new Date(),
          ['name" = NULL; --']: 'x',
        } as never),
      () => ctx.writer.insert('users', { id: 'x2', email: 'x2@example.com', passwordHash: 'h' } as never),
      () => ctx.writer.update('users', 'dw_user_1', { updatedAt: 'yesterday' }),
      () => ctx.writer.update('users', 'dw_user_1', {}),
      () => ctx.writer.update('telemetry', '1; DROP TABLE users', { source: 'x' }),
      () => ctx.writer.delete('device_data' as never, '1'),
    ];
    for (const call of bad) await expect(call()).rejects.toBeInstanceOf(InvalidInputError);
    expect((await ctx.dbs.v1.query('SELECT count(*)::int AS n FROM users')).rows[0].n).toBe(before);
  });

  it("passes V1's own errors to the caller and writes nothing to V2 for them", async () => {
    await expect(
      ctx.writer.insert('users', {
        id: 'dw_user_1',
        email: 'duplicate@example.com',
        passwordHash: 'h',
        updatedAt: new Date(),
      }),
    ).rejects.toMatchObject({ code: '23505' });
    expect((await v2RowsOf(ctx.dbs, 'users', 'dw_user_1'))[0].email).toBe('zoë@example.com');
  });

  it('mirrors rows the backend wrote to V1 itself', async () => {
    await ctx.dbs.v1.query(
      `INSERT INTO users (id, email, "passwordHash", "updatedAt") VALUES ('dw_mirror', 'm@example.com', 'h', now())`,
    );
    const row = (await ctx.dbs.v1.query(`SELECT * FROM users WHERE id = 'dw_mirror'`)).rows[0];
    await ctx.writer.mirror('users', row);
    await expectRowInSync(ctx.dbs, ctx.config, 'users', 'dw_mirror');
    await ctx.dbs.v1.query(`DELETE FROM users WHERE id = 'dw_mirror'`);
    await ctx.writer.mirrorDelete('users', 'dw_mirror');
    expect(await v2RowsOf(ctx.dbs, 'users', 'dw_mirror')).toEqual([]);
  });

  it('mirrors a row whose V1 state names a parent V2 does not hold yet: the parent first, from V1', async () => {
    // Another caller has just created the owner and given it the device; that caller's V2 half
    // has not landed yet when this write of the device re-reads V1.
    await ctx.dbs.v1.query(
      `INSERT INTO users (id, email, "passwordHash", "updatedAt") VALUES ('dw_new_owner', 'owner@example.com', 'h', now())`,
    );
    await ctx.dbs.v1.query(
      `INSERT INTO devices (id, name, type, "ownerId", "updatedAt") VALUES ('dw_owned', 'owned', 'dw_type', 'dw_new_owner', now())`,
    );
    await ctx.dbs.v1.query(
      `INSERT INTO alerts (id, "deviceId", severity, message) VALUES ('dw_owned_alert', 'dw_owned', 'LOW', 'm')`,
    );
    await ctx.writer.mirrorById('alerts', 'dw_owned_alert');
    await expectRowInSync(ctx.dbs, ctx.config, 'users', 'dw_new_owner');
    await expectRowInSync(ctx.dbs, ctx.config, 'devices', 'dw_owned');
    await expectRowInSync(ctx.dbs, ctx.config, 'alerts', 'dw_owned_alert');
  });
});

describe('DualWriter racing the backfill', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    ctx = await setup('dualw_race', { devices: 8, telemetry: 400 });
  });
  afterAll(() => ctx.dbs.drop());

  it('keeps a dual-written row through a later backfill, and a later dual write updates a backfilled row', async () => {
    const { dbs, config, writer } = ctx;
    const users = (await dbs.v1.query(`SELECT id FROM users ORDER BY id LIMIT 2`)).rows.map((r) => r.id);
    const device = (await dbs.v1.query(`SELECT id FROM devices ORDER BY id LIMIT 1`)).rows[0].id;

    // Dual writes before the backfill: they land in V2 first.
    await writer.update('users', users[0], { name: 'written before the backfill' });
    await writer.insert('users', {
      id: 'race_new_user',
      email: 'race@example.com',
      passwordHash: 'h',
      updatedAt: at('2026-06-01T00:00:00Z'),
    });
    await writer.update('devices', device, { ownerId: users[0], status: 'ONLINE' });
    const versions = async () =>
      Promise.all([
        v2RowsOf(dbs, 'users', users[0]),
        v2RowsOf(dbs, 'users', 'race_new_user'),
        v2RowsOf(dbs, 'devices', device),
      ]).then((all) => all.map((rows) => rows[0]?.row_version));
    const before = await versions();
    expect(before.every((v) => typeof v === 'string')).toBe(true);
    expect(ctx.failures).toEqual([]);

    const progress = await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
    expect(progress.complete).toBe(true);
    // ON CONFLICT DO NOTHING: the backfill left the dual-written rows physically untouched.
    expect(await versions()).toEqual(before);
    await expectAllInSync(dbs, config);

    // Dual writes after the backfill replace the copies it made.
    const [telemetry] = (await dbs.v1.query(`SELECT id::text AS id FROM device_data ORDER BY id LIMIT 1`))
      .rows;
    const [alert] = (await dbs.v1.query(`SELECT id FROM alerts ORDER BY id LIMIT 1`)).rows;
    const copied = {
      user: (await v2RowsOf(dbs, 'users', users[1]))[0],
      telemetry: (await v2RowsOf(dbs, 'telemetry', telemetry.id))[0],
      alert: (await v2RowsOf(dbs, 'alerts', alert.id))[0],
    };
    await writer.update('users', users[1], { name: 'written after the backfill', role: 'OPERATOR' });
    await writer.update('telemetry', telemetry.id, {
      timestamp: new Date((copied.telemetry.timestamp as Date).getTime() - 86_400_000 * 40),
      data: { after: true },
    });
    await writer.update('alerts', alert.id, { status: 'ACKNOWLEDGED' });
    expect((await v2RowsOf(dbs, 'users', users[1]))[0]).toMatchObject({
      name: 'written after the backfill',
      role: 'OPERATOR',
    });
    expect((await v2RowsOf(dbs, 'users', users[1]))[0].row_version).not.toBe(copied.user.row_version);
    expect((await v2RowsOf(dbs, 'telemetry', telemetry.id))[0].metrics).toEqual({ after: true });
    expect((await v2RowsOf(dbs, 'alerts', alert.id))[0].status).toBe('ACKNOWLEDGED');
    await expectAllInSync(dbs, config);
    expect(ctx.failures).toEqual([]);
  });
});

describe('the time zone of this suite', () => {
  it('is not UTC: Node reads local times at UTC+05:30', () => {
    expect(new Date('2024-01-01T00:00:00Z').getTimezoneOffset()).toBe(-330);
    expect(new Date('2024-01-01T00:00:00Z').getHours()).toBe(5);
  });
});
