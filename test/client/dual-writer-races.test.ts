import '../../lambdas/core/polyfills';
import type { Pool } from 'pg';
import { DualWriter } from '../../client';
import type { V1Patch } from '../../client/v1-rows';
import { MAPPINGS, type MappedTable } from '../../lambdas/core/mapping';
import type { WritePrimary } from '../../lambdas/ports/parameters';
import { dualWriterSuite, dualWriteSwitch, expectRowInSync, type DualWriterSuite } from './helpers';

/**
 * Two writes of one row racing, with either side the write primary: the earlier write's mirror
 * half lands after the later write's, as a slow connection would make it. The mirror side must
 * end as the write primary ends.
 */

/** A pool whose first query carrying `held` among its values (or inside one) waits until released. */
function holdingPool(pool: Pool, held: string) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let holding!: () => void;
  const isHolding = new Promise<void>((resolve) => (holding = resolve));
  const wrapped = {
    async query(config: unknown, values?: unknown[]) {
      if (Array.isArray(values) && values.some((v) => typeof v === 'string' && v.includes(held))) {
        holding();
        await released;
      }
      return pool.query(config as string, values);
    },
    on: () => wrapped,
  } as unknown as Pool;
  return { pool: wrapped, isHolding, release };
}

describe.each<{ primary: WritePrimary; mirror: WritePrimary }>([
  { primary: 'v1', mirror: 'v2' },
  { primary: 'v2', mirror: 'v1' },
])('DualWriter, $primary the write primary: two writes of one row racing', ({ primary, mirror }) => {
  let suite: DualWriterSuite;
  beforeAll(async () => {
    suite = await dualWriterSuite(`dwrace_${primary}`, {
      router: dualWriteSwitch(true, primary),
      seed: { devices: 3, telemetry: 20, seed: 3 },
      backfilled: true,
    });
  });
  afterAll(() => suite.dbs.drop());

  /** The row of `id` in the mirror side's table, `columns` of it. */
  const onMirror = async (table: MappedTable, id: string, columns: string) => {
    const m = MAPPINGS[table];
    const { rows } = await suite.dbs[mirror].query(
      `SELECT ${columns} FROM ${mirror === 'v1' ? m.v1Table : m.v2Table} WHERE ${mirror === 'v1' ? 'id' : m.v2Key} = $1`,
      [id],
    );
    return rows;
  };
  /**
   * A race on the first row of `table`: A writes `early` through a second writer whose mirror
   * half stalls at its first query carrying that value; meanwhile B writes `late` through the
   * suite's writer; then A's mirror half goes on. A's failures are recorded with the suite's.
   */
  const race = async <T extends 'users' | 'alerts'>(
    table: T,
    early: V1Patch<T>,
    late: (writer: DualWriter, id: string) => Promise<unknown>,
  ): Promise<string> => {
    const id = (await suite.dbs.v1.query(`SELECT id FROM ${table} ORDER BY id LIMIT 1`)).rows[0].id as string;
    const held = Object.values(early)[0] as string;
    const slow = holdingPool(suite.dbs[mirror], held);
    const writer = new DualWriter({
      v1: mirror === 'v1' ? slow.pool : suite.dbs.v1,
      v2: mirror === 'v2' ? slow.pool : suite.dbs.v2,
      router: dualWriteSwitch(true, primary),
      repairQueue: suite.queue,
      tenantId: suite.config.tenant.id,
      onV2Failure: (f) => void suite.failures.push(f),
      onV1Failure: (f) => void suite.failures.push(f),
    });
    const a = writer.update(table, id, early);
    // A write that ends without reaching the held query fails here instead of waiting forever.
    await Promise.race([
      slow.isHolding,
      a.then(() => {
        throw new Error(`A's write ended without a query carrying "${held}"`);
      }),
    ]);
    await late(suite.writer, id);
    slow.release();
    await a;
    return id;
  };

  it(`leaves ${mirror.toUpperCase()} as ${primary.toUpperCase()} ends when the earlier write reaches it last`, async () => {
    // A writes the primary, then its mirror half stalls; B writes both; then A's mirror half lands.
    const id = await race('users', { name: 'name from A' }, (b, id) =>
      b.update('users', id, { name: 'name from B' }),
    );
    expect(await onMirror('users', id, 'name')).toEqual([{ name: 'name from B' }]);
    await expectRowInSync(suite.dbs, suite.config, 'users', id);
    expect(suite.failures).toEqual([]);
  });

  it(`does not bring a row back into ${mirror.toUpperCase()} that was deleted while an earlier write of it was on its way`, async () => {
    const id = await race('alerts', { message: 'message from A' }, (b, id) => b.delete('alerts', id));
    expect(await onMirror('alerts', id, '1')).toEqual([]);
    expect(suite.failures).toEqual([]);
  });
});
