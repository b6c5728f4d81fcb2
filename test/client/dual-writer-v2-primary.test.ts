import '../../lambdas/core/polyfills';
import type { Pool } from 'pg';
import { repairBatchHandler } from '../../lambdas/core/sync/repair';
import { LegacyIdAllocator } from '../../lambdas/core/sync/v2-writes';
import { LegacyIdUnavailableError } from '../../lambdas/core/write-switch-errors';
import {
  DUAL_WRITE_V1_FAILURE_METRIC,
  DualWriter,
  REPAIR_MESSAGE_TYPE,
  type DualWriteFailure,
} from '../../client';
import { seedV1 } from '../support/fixtures';
import { freshDatabases, suiteSetup, type TestDatabases } from '../support/pg';
import { describeEachStorage, type StorageCase } from '../support/servers';
import {
  dualWriterSuite,
  dualWriteSwitch,
  expectAllInSync,
  expectRowInSync,
  minimalUser,
  recorder,
  useDualWriterSuite,
  whileDualWriteOff,
  v2RowsOf,
} from './helpers';

/** The suites' DualWriter, V2 the write primary, over a backfilled V2. */
const setup = (prefix: string, storage?: StorageCase) =>
  dualWriterSuite(prefix, {
    router: dualWriteSwitch(true, 'v2'),
    seed: { devices: 4, telemetry: 60, seed: 5 },
    backfilled: true,
    storage,
    legacyIdBlockSize: 4,
  });

const at = (iso: string) => new Date(iso);

describeEachStorage('DualWriter with V2 the write primary', (storage) => {
  const ctx = useDualWriterSuite(() => setup('dwv2', storage), { quietQueue: true });

  it('inserts into V2 first, fills V1’s defaults, mirrors V1 exactly, and returns the row as V1 holds it', async () => {
    const sequenceBefore = (await ctx.dbs.v1.query(`SELECT last_value::text AS v FROM device_data_id_seq`))
      .rows[0].v;
    const user = await ctx.writer.insert('users', {
      id: 'v2p_user',
      email: 'v2p@example.com',
      passwordHash: 'h',
      createdAt: '2026-07-01T12:00:00.123+02:00',
      updatedAt: at('2026-07-02T00:00:00Z'),
    });
    expect(user).toMatchObject({ id: 'v2p_user', role: 'VIEWER', name: null });
    expect(user.createdAt.toISOString()).toBe('2026-07-01T10:00:00.123Z');
    const device = await ctx.writer.insert('devices', {
      id: 'v2p_device',
      name: 'born in V2',
      type: 'v2p_type',
      ownerId: user.id,
      config: { nested: [1, null, 'é'] },
      updatedAt: at('2026-07-02T00:00:00Z'),
    });
    expect(device).toMatchObject({ status: 'OFFLINE', type: 'v2p_type', config: { nested: [1, null, 'é'] } });
    // V1's DEFAULT CURRENT_TIMESTAMP: milliseconds, as V1 stores them.
    expect(device.createdAt.getTime() % 1).toBe(0);
    const reading = await ctx.writer.insert('telemetry', {
      deviceId: device.id,
      timestamp: at('2026-07-03T00:00:00.007Z'),
      data: { temp: 1e300, big: -0.000001 },
      protocol: 'MQTT',
    });
    // V2 holds no NULL source (the mapping's 'migrated'), so neither does the V1 row it mirrors.
    expect(reading.source).toBe('migrated');
    expect(
      (await ctx.dbs.v1.query(`SELECT source FROM device_data WHERE id = $1`, [reading.id])).rows[0].source,
    ).toBe('migrated');
    const alert = await ctx.writer.insert('alerts', {
      id: 'v2p_alert',
      deviceId: device.id,
      severity: 'LOW',
      message: 'born in V2',
    });
    expect(alert.status).toBe('OPEN');

    for (const [table, id] of [
      ['users', user.id],
      ['devices', device.id],
      ['telemetry', reading.id],
      ['alerts', alert.id],
    ] as const)
      await expectRowInSync(ctx.dbs, ctx.config, table, id);
    // The telemetry id came from V1's own sequence, and V2 keeps it as legacy_id.
    expect(BigInt(reading.id)).toBeGreaterThan(BigInt(sequenceBefore));
    expect((await v2RowsOf(ctx.dbs, 'telemetry', reading.id))[0]).toMatchObject({
      legacy_id: reading.id,
      source: 'migrated',
      quality: 'GOOD',
    });
    const v1Row = (await ctx.dbs.v1.query(`SELECT * FROM devices WHERE id = 'v2p_device'`)).rows[0];
    expect(v1Row.config).toEqual({ nested: [1, null, 'é'] });
  });

  it('updates V2 first (a device type change, a telemetry time move across chunks) and mirrors V1', async () => {
    const updated = await ctx.writer.update('users', 'v2p_user', { name: 'Zoë', role: 'ADMIN' });
    expect(updated).toMatchObject({ name: 'Zoë', role: 'ADMIN', email: 'v2p@example.com' });
    await ctx.writer.update('devices', 'v2p_device', { type: 'v2p_type_b', config: null });
    const [reading] = (
      await ctx.dbs.v1.query(`SELECT id::text AS id FROM device_data WHERE "deviceId" = 'v2p_device'`)
    ).rows;
    const moved = await ctx.writer.update('telemetry', reading.id, {
      timestamp: at('2025-01-20T10:00:00Z'),
      source: 'edge',
    });
    expect(moved?.timestamp.toISOString()).toBe('2025-01-20T10:00:00.000Z');
    // A backfilled row, updated in V2 first.
    const [old] = (await ctx.dbs.v1.query(`SELECT id::text AS id FROM device_data ORDER BY id LIMIT 1`)).rows;
    await ctx.writer.update('telemetry', old.id, { data: { updated: 'in V2' } });

    await expectRowInSync(ctx.dbs, ctx.config, 'users', 'v2p_user');
    const device = await expectRowInSync(ctx.dbs, ctx.config, 'devices', 'v2p_device');
    expect(device?.metadata).toEqual({ migratedFrom: 'v1', originalType: 'v2p_type_b' });
    expect(
      (await v2RowsOf(ctx.dbs, 'telemetry', reading.id)).map((r) => (r.timestamp as Date).toISOString()),
    ).toEqual(['2025-01-20T10:00:00.000Z']);
    await expectRowInSync(ctx.dbs, ctx.config, 'telemetry', reading.id);
    await expectRowInSync(ctx.dbs, ctx.config, 'telemetry', old.id);
    expect(await ctx.writer.update('users', 'no_such_user', { name: 'x' })).toBeNull();
  });

  it('deletes from V2 first and V1 follows, cascades included', async () => {
    const deleted = await ctx.writer.delete('devices', 'v2p_device');
    expect(deleted).toMatchObject({ id: 'v2p_device', type: 'v2p_type_b' });
    for (const table of ['devices', 'alerts'] as const)
      expect((await ctx.dbs.v1.query(`SELECT 1 FROM ${table} WHERE id LIKE 'v2p_%'`)).rows).toEqual([]);
    expect(
      (await ctx.dbs.v1.query(`SELECT 1 FROM device_data WHERE "deviceId" = 'v2p_device'`)).rows,
    ).toEqual([]);
    expect(await ctx.writer.delete('alerts', 'v2p_alert')).toBeNull();
    await expectAllInSync(ctx.dbs, ctx.config);
  });

  it("passes V2's own errors to the caller and writes nothing to V1 for them", async () => {
    const user = (await ctx.dbs.v1.query(`SELECT id FROM users ORDER BY id LIMIT 1`)).rows[0].id;
    await expect(
      ctx.writer.insert('users', {
        id: user,
        email: 'dup@example.com',
        passwordHash: 'h',
        updatedAt: new Date(),
      }),
    ).rejects.toMatchObject({ code: '23505' });
    await expect(
      ctx.writer.insert('alerts', {
        id: 'v2p_orphan',
        deviceId: 'no_such_device',
        severity: 'x',
        message: 'x',
      }),
    ).rejects.toMatchObject({ code: '23503' });
    expect((await ctx.dbs.v1.query(`SELECT 1 FROM alerts WHERE id = 'v2p_orphan'`)).rows).toEqual([]);
    expect((await ctx.dbs.v1.query(`SELECT email FROM users WHERE id = $1`, [user])).rows[0].email).not.toBe(
      'dup@example.com',
    );
  });

  it('writes V2 only while dual-write is off (after cleanup), V1 untouched', async () => {
    await whileDualWriteOff(ctx, async () => {
      await ctx.writer.insert('users', minimalUser('v2p_alone', new Date()));
    });
    expect(await v2RowsOf(ctx.dbs, 'users', 'v2p_alone')).toHaveLength(1);
    expect((await ctx.dbs.v1.query(`SELECT 1 FROM users WHERE id = 'v2p_alone'`)).rows).toEqual([]);
    await ctx.writer.delete('users', 'v2p_alone');
  });

  it('mirrors rows the backend wrote to V2 itself, by id', async () => {
    await ctx.dbs.v2.query(
      `INSERT INTO users (id, tenant_id, email, password_hash, role, created_at, updated_at)
       VALUES ('v2p_native', $1, 'native@example.com', 'h', 'OPERATOR', '2026-01-01T00:00:00.5Z', '2026-01-01T00:00:00Z')`,
      [ctx.config.tenant.id],
    );
    await ctx.writer.mirrorById('users', 'v2p_native');
    await expectRowInSync(ctx.dbs, ctx.config, 'users', 'v2p_native');
    await ctx.dbs.v2.query(`DELETE FROM users WHERE id = 'v2p_native'`);
    await ctx.writer.mirrorDelete('users', 'v2p_native');
    expect((await ctx.dbs.v1.query(`SELECT 1 FROM users WHERE id = 'v2p_native'`)).rows).toEqual([]);
  });

  it('never touches a V2 row of another tenant, nor mirrors it to V1', async () => {
    await ctx.dbs.v2.query(
      `INSERT INTO tenants (id, name, slug, plan, status) VALUES ('other_tenant', 'Other', 'other', 'FREE', 'ACTIVE')`,
    );
    await ctx.dbs.v2.query(
      `INSERT INTO users (id, tenant_id, email, password_hash, updated_at) VALUES ('v2p_other', 'other_tenant', 'o@example.com', 'h', now())`,
    );
    expect(await ctx.writer.update('users', 'v2p_other', { name: 'not mine' })).toBeNull();
    await ctx.writer.mirrorById('users', 'v2p_other');
    expect((await ctx.dbs.v1.query(`SELECT 1 FROM users WHERE id = 'v2p_other'`)).rows).toEqual([]);
    expect((await ctx.dbs.v2.query(`SELECT name FROM users WHERE id = 'v2p_other'`)).rows).toEqual([
      { name: null },
    ]);
    await ctx.dbs.v2.query(`DELETE FROM users WHERE id = 'v2p_other'`);
    await ctx.dbs.v2.query(`DELETE FROM tenants WHERE id = 'other_tenant'`);
  });
});

describe('DualWriter with V2 primary: failed V1 mirrors are repaired from V2', () => {
  const ctx = suiteSetup(() => setup('dwv2_repair'));

  it('never fails the caller, queues a repair from V2, and the repair worker makes V1 whole', async () => {
    const { dbs, config } = ctx;
    const brokenV1 = {
      query: async () => {
        throw Object.assign(new Error('Connection terminated unexpectedly'), { code: undefined });
      },
      on: () => brokenV1,
    } as unknown as Pool;
    const failures: DualWriteFailure[] = [];
    const rec = recorder();
    const writer = new DualWriter({
      v1: brokenV1,
      v2: dbs.v2,
      router: dualWriteSwitch(true, 'v2'),
      repairQueue: ctx.queue,
      tenantId: config.tenant.id,
      onMetric: rec.onMetric,
      onV1Failure: (f) => void failures.push(f),
    });
    const device = (await dbs.v1.query(`SELECT id FROM devices ORDER BY id LIMIT 1`)).rows[0].id as string;
    const alert = await writer.insert('alerts', {
      id: 'rep_alert',
      deviceId: device,
      severity: 'HIGH',
      message: 'm',
    });
    expect(alert.id).toBe('rep_alert');
    await writer.update('devices', device, { status: 'REPAIRED-FROM-V2' });
    const telemetry = (await dbs.v1.query(`SELECT id::text AS id FROM device_data ORDER BY id DESC LIMIT 1`))
      .rows[0].id as string;
    await writer.delete('telemetry', telemetry);
    // A telemetry insert needs a V1 id, which a V1 that is down cannot give: a named error.
    await expect(
      writer.insert('telemetry', { deviceId: device, timestamp: new Date(), data: {}, protocol: 'x' }),
    ).rejects.toBeInstanceOf(LegacyIdUnavailableError);

    expect(failures.map((f) => [f.table, f.id, f.operation, f.target, f.error.name, f.repairQueued])).toEqual(
      [
        ['alerts', 'rep_alert', 'insert', 'v1', 'DualWriteV1Error', true],
        ['devices', device, 'update', 'v1', 'DualWriteV1Error', true],
        ['telemetry', telemetry, 'delete', 'v1', 'DualWriteV1Error', true],
      ],
    );
    expect(rec.count(DUAL_WRITE_V1_FAILURE_METRIC)).toBe(3);
    expect(ctx.queue.bodies.map((b) => JSON.parse(b))).toEqual([
      { type: REPAIR_MESSAGE_TYPE, table: 'alerts', id: 'rep_alert', from: 'v2' },
      { type: REPAIR_MESSAGE_TYPE, table: 'devices', id: device, from: 'v2' },
      { type: REPAIR_MESSAGE_TYPE, table: 'telemetry', id: telemetry, from: 'v2' },
    ]);
    expect(
      (await dbs.v1.query(`SELECT status FROM devices WHERE id = $1`, [device])).rows[0].status,
    ).not.toBe('REPAIRED-FROM-V2');

    const repaired: unknown[] = [];
    const handle = repairBatchHandler(
      { v1: dbs.v1, v2: dbs.v2, tenantId: config.tenant.id },
      { onRepaired: (_r, result) => repaired.push(result) },
    );
    const result = await handle(
      ctx.queue.bodies.map((body, i) => ({ messageId: String(i), body, receiveCount: 1 })),
    );
    expect(result.batchItemFailures).toEqual([]);
    expect(repaired).toEqual([
      { table: 'alerts', id: 'rep_alert', action: 'upserted', from: 'v2' },
      { table: 'devices', id: device, action: 'upserted', from: 'v2' },
      { table: 'telemetry', id: telemetry, action: 'deleted', from: 'v2' },
    ]);
    await expectAllInSync(dbs, config);
  });
});

describe('LegacyIdAllocator', () => {
  let dbs: TestDatabases;
  beforeAll(async () => {
    dbs = await freshDatabases('legacy_ids');
    await seedV1(dbs.v1, { devices: 2, telemetry: 10 });
  });
  afterAll(() => dbs.drop());

  it('reserves ids from V1’s own sequence in blocks, unique beside V1’s own inserts', async () => {
    let calls = 0;
    const counting = {
      query: (...args: Parameters<Pool['query']>) => {
        calls++;
        return (dbs.v1.query as (...a: unknown[]) => Promise<unknown>)(...args);
      },
    } as unknown as Pool;
    const allocator = new LegacyIdAllocator(counting, 'public', 10);
    const ids: string[] = [];
    for (let i = 0; i < 25; i++) {
      ids.push(...(await allocator.take(1)));
      // V1's own writers keep using the same sequence.
      if (i % 5 === 0)
        ids.push(
          (
            await dbs.v1.query(
              `INSERT INTO device_data ("deviceId", "timestamp", data, protocol)
               SELECT id, now(), '{}', 'x' FROM devices LIMIT 1 RETURNING id::text AS id`,
            )
          ).rows[0].id,
        );
    }
    expect(new Set(ids).size).toBe(ids.length);
    // 25 ids in blocks of 10, the next block reserved at half: a handful of calls, not 25.
    expect(calls).toBeLessThanOrEqual(6);
    const last = (await dbs.v1.query(`SELECT last_value::text AS v FROM device_data_id_seq`)).rows[0].v;
    for (const id of ids) expect(BigInt(id)).toBeLessThanOrEqual(BigInt(last));
  });

  it('keeps handing out its reserved ids while V1 is down, then fails with a named error', async () => {
    let down = false;
    const flaky = {
      query: (...args: Parameters<Pool['query']>) =>
        down
          ? Promise.reject(new Error('connect ECONNREFUSED'))
          : (dbs.v1.query as (...a: unknown[]) => Promise<unknown>)(...args),
    } as unknown as Pool;
    const allocator = new LegacyIdAllocator(flaky, 'public', 4);
    await allocator.take(1);
    await new Promise((r) => setImmediate(r));
    down = true;
    const more = await allocator.take(2);
    expect(more).toHaveLength(2);
    let error: unknown;
    for (let i = 0; i < 8 && !error; i++) await allocator.take(1).catch((e: unknown) => (error = e));
    expect(error).toBeInstanceOf(LegacyIdUnavailableError);
    expect((error as Error).message).toMatch(/ECONNREFUSED/);
  });
});
