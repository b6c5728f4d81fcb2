import '../../lambdas/core/polyfills';
import { Pool } from 'pg';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import { ConfigError, ShadowReadError } from '../../lambdas/core/errors';
import { mapRow } from '../../lambdas/core/mapping';
import {
  differingColumns,
  readV1Row,
  SHADOW_READ_ERROR_METRIC,
  SHADOW_READ_MISMATCH_METRIC,
  SHADOW_READ_SKIPPED_METRIC,
  ShadowReader,
  type ShadowMismatch,
} from '../../client';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases } from '../support/pg';
import { describeEachStorage } from '../support/servers';
import { recorder } from './helpers';

const tenantId = 'default_tenant_id';

/** A V2 pool stand-in whose queries never answer, counting them. */
function hangingPool() {
  const pool = { calls: 0, query: () => ((pool.calls += 1), new Promise<never>(() => undefined)) };
  return pool;
}

describe('differingColumns', () => {
  const v1 = {
    id: 'u1',
    email: 'a@example.com',
    name: null,
    passwordHash: 'h',
    role: 'ADMIN',
    createdAt: new Date('2026-01-01T10:00:00Z'),
    updatedAt: new Date('2026-01-02T00:00:00Z'),
  };
  /** The V2 row of `v1`, written out (docs/DESIGN.md's data contract), not computed by mapRow. */
  const user = {
    id: 'u1',
    tenant_id: tenantId,
    email: 'a@example.com',
    name: null,
    password_hash: 'h',
    role: 'ADMIN',
    created_at: new Date('2026-01-01T10:00:00Z'),
    updated_at: new Date('2026-01-02T00:00:00Z'),
  };
  const device = {
    id: 'd',
    tenant_id: tenantId,
    name: 'n',
    status: 's',
    attributes: { a: 1, b: [1, { c: 2 }] },
    metadata: { migratedFrom: 'v1', originalType: 't' },
    owner_id: null,
    last_seen_at: null,
    created_at: null,
    updated_at: null,
  };

  it('the literal rows are what the mapping gives (V1 → V2)', () => {
    expect(mapRow('users', v1, { tenantId })).toEqual(user);
    expect(
      mapRow(
        'devices',
        {
          id: 'd',
          name: 'n',
          type: 't',
          status: 's',
          config: { a: 1, b: [1, { c: 2 }] },
          ownerId: null,
          lastSeenAt: null,
          createdAt: null,
          updatedAt: null,
        },
        { tenantId },
      ),
    ).toMatchObject(device);
  });

  it('compares timestamps as instants and JSON structurally', () => {
    const v2 = { ...user, created_at: '2026-01-01T12:00:00+02:00' };
    expect(differingColumns('users', user, v2)).toEqual([]);
    expect(
      differingColumns(
        'devices',
        device,
        { ...device, attributes: { b: [1, { c: 2 }], a: 1 } },
        { v1: 't', v2: 't' },
      ),
    ).toEqual([]);
    expect(
      differingColumns(
        'devices',
        device,
        { ...device, attributes: { a: 1, b: [{ c: 2 }, 1] } },
        { v1: 't', v2: 'u' },
      ),
    ).toEqual(['attributes', 'template_id']);
  });

  it('names every column that differs', () => {
    const v2 = { ...user, name: 'x', updated_at: new Date('2026-01-02T00:00:00.001Z'), tenant_id: 'other' };
    expect(differingColumns('users', user, v2)).toEqual(['tenant_id', 'name', 'updated_at']);
  });
});

describe('ShadowReader without a database', () => {
  it('returns the V1 row before V2 is even asked, and never waits for V2', async () => {
    const v2 = hangingPool();
    const shadow = new ShadowReader({ v2: v2 as unknown as Pool, sampleRate: 1 });
    const row = { id: 'u1', name: 'x' };
    await expect(shadow.read('users', 'u1', async () => row)).resolves.toBe(row);
    expect(v2.calls).toBe(0);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(v2.calls).toBe(1);
  });

  it('samples: rate 0 never reads V2; reads beyond maxInFlight are skipped and counted', async () => {
    const v2 = hangingPool();
    const none = new ShadowReader({ v2: v2 as unknown as Pool, sampleRate: 0 });
    for (let i = 0; i < 50; i++) none.observe('users', { id: `u${i}` });
    const rec = recorder();
    const capped = new ShadowReader({ v2: v2 as unknown as Pool, sampleRate: 1, maxInFlight: 2, ...rec });
    for (let i = 0; i < 5; i++) capped.observe('users', { id: `u${i}` });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(v2.calls).toBe(2);
    expect(rec.count(SHADOW_READ_SKIPPED_METRIC)).toBe(3);
    const half = new ShadowReader({ v2: v2 as unknown as Pool, sampleRate: 0.5, random: () => 0.7 });
    half.observe('users', { id: 'u' });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(v2.calls).toBe(2);
  });

  it("passes the V1 read's own error to the caller, and never throws its own", async () => {
    const shadow = new ShadowReader({
      v2: hangingPool() as unknown as Pool,
      sampleRate: 1,
      onMetric: () => {
        throw new Error('broken hook');
      },
    });
    await expect(shadow.read('users', 'u', () => Promise.reject(new Error('V1 down')))).rejects.toThrow(
      'V1 down',
    );
    expect(() => shadow.observe('not_a_table' as never, { id: 'x' })).not.toThrow();
    expect(() => shadow.observe('telemetry', { id: 'not-a-number' })).not.toThrow();
  });

  it('refuses a sample rate outside 0–1', () => {
    expect(() => new ShadowReader({ v2: hangingPool() as unknown as Pool, sampleRate: 2 })).toThrow(
      ConfigError,
    );
  });
});

describeEachStorage('ShadowReader', (storage) => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  async function setup() {
    const dbs = await freshDatabases('shadow', storage.server);
    await seedV1(dbs.v1, { devices: 4, telemetry: 60, seed: 2 });
    const config = testConfig(dbs);
    await prepared(dbs, config);
    await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
    const rec = recorder();
    const mismatches: ShadowMismatch[] = [];
    const errors: ShadowReadError[] = [];
    const shadow = new ShadowReader({
      v2: dbs.v2,
      sampleRate: 1,
      tenantId: config.tenant.id,
      onMetric: rec.onMetric,
      onMismatch: (m) => void mismatches.push(m),
      onError: (e) => void errors.push(e),
    });
    return { dbs, config, rec, mismatches, errors, shadow };
  }
  beforeAll(async () => {
    ctx = await setup();
  });
  afterAll(() => ctx.dbs.drop());
  beforeEach(() => {
    ctx.mismatches.length = 0;
    ctx.errors.length = 0;
    ctx.rec.metrics.length = 0;
  });

  const first = async (table: 'users' | 'devices' | 'telemetry' | 'alerts') => {
    const v1Table = table === 'telemetry' ? 'device_data' : table;
    const { rows } = await ctx.dbs.v1.query(`SELECT id::text AS id FROM ${v1Table} ORDER BY id LIMIT 1`);
    return rows[0].id as string;
  };
  const v1Read = (table: 'users' | 'devices' | 'telemetry' | 'alerts', id: string) => () =>
    readV1Row(ctx.dbs.v1, 'public', table, id);

  it('reports nothing when V2 equals V1', async () => {
    for (const table of ['users', 'devices', 'telemetry', 'alerts'] as const) {
      const id = await first(table);
      const row = await ctx.shadow.read(table, id, v1Read(table, id));
      expect(row?.id).toBe(id);
    }
    ctx.shadow.observe('users', { id: 'nobody' } as never);
    await ctx.shadow.read('users', 'nobody', async () => null);
    await ctx.shadow.idle();
    expect(ctx.errors).toEqual([]);
    // Only the hand-made row without columns differs; every real row matches.
    expect(ctx.mismatches).toEqual([
      { table: 'users', id: 'nobody', kind: 'missing', columns: expect.arrayContaining(['email']) },
    ]);
  });

  it('reports the differing columns when V2 differs, and rows missing on either side', async () => {
    const user = await first('users');
    const telemetry = await first('telemetry');
    const alert = await first('alerts');
    await ctx.dbs.v2.query(
      `UPDATE users SET name = 'drifted', updated_at = updated_at + interval '1 ms' WHERE id = $1`,
      [user],
    );
    await ctx.dbs.v2.query(`UPDATE telemetry SET metrics = '{"drifted": true}' WHERE legacy_id = $1`, [
      telemetry,
    ]);
    await ctx.dbs.v2.query(`DELETE FROM alerts WHERE id = $1`, [alert]);
    await ctx.dbs.v2.query(
      `INSERT INTO users (id, tenant_id, email, password_hash, updated_at) VALUES ('v2_only', $1, 'v2@example.com', 'h', now())`,
      [ctx.config.tenant.id],
    );
    await ctx.shadow.read('users', user, v1Read('users', user));
    await ctx.shadow.read('telemetry', telemetry, v1Read('telemetry', telemetry));
    await ctx.shadow.read('alerts', alert, v1Read('alerts', alert));
    await ctx.shadow.read('users', 'v2_only', v1Read('users', 'v2_only'));
    await ctx.shadow.idle();
    expect(ctx.errors).toEqual([]);
    expect(ctx.mismatches).toEqual(
      expect.arrayContaining([
        { table: 'users', id: user, kind: 'different', columns: ['name', 'updated_at'] },
        { table: 'telemetry', id: telemetry, kind: 'different', columns: ['metrics'] },
        { table: 'alerts', id: alert, kind: 'missing', columns: expect.arrayContaining(['severity']) },
        { table: 'users', id: 'v2_only', kind: 'unexpected', columns: expect.arrayContaining(['email']) },
      ]),
    );
    expect(ctx.mismatches).toHaveLength(4);
    expect(ctx.rec.count(SHADOW_READ_MISMATCH_METRIC)).toBe(4);
  });

  it('reports V2 errors without throwing into the caller when V2 is down', async () => {
    const closed = new Pool({ connectionString: ctx.dbs.v2Url });
    await closed.end();
    const rec = recorder();
    const errors: ShadowReadError[] = [];
    const shadow = new ShadowReader({
      v2: closed,
      sampleRate: 1,
      ...rec,
      onError: (e) => void errors.push(e),
    });
    const id = await first('users');
    const row = await shadow.read('users', id, v1Read('users', id));
    expect(row?.id).toBe(id);
    await shadow.idle();
    expect(rec.count(SHADOW_READ_ERROR_METRIC)).toBe(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(ShadowReadError);
    expect(errors[0].message).toMatch(/after calling end/);
  });
});
